//! The tensor element types a GGUF file can hold (ggml's `ggml_type`), with their block
//! geometry. Shared by the GGUF reader (to size tensors) and the quant kernels.

use std::fmt;

/// A ggml tensor type. The discriminant is the id stored in GGUF tensor infos.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
}

/// Every id of `enum ggml_type` in ggml/include/ggml.h (`GGML_TYPE_COUNT` is 43, as of the
/// llama.cpp vendored by llama-cpp-python 0.3.36), with its name as
/// llama.cpp prints it, and whether ggml has removed it (`Q4_2`, `Q4_3` and the repacked
/// `Q4_0_4_4`… `IQ4_NL_8_8` are commented out of the enum; their ids stay reserved). Only
/// some of these are [`GgmlType`]s: the table is there to name the others in errors.
pub const GGML_TYPE_NAMES: [(&str, bool); 43] = [
    ("F32", false),
    ("F16", false),
    ("Q4_0", false),
    ("Q4_1", false),
    ("Q4_2", true),
    ("Q4_3", true),
    ("Q5_0", false),
    ("Q5_1", false),
    ("Q8_0", false),
    ("Q8_1", false),
    ("Q2_K", false),
    ("Q3_K", false),
    ("Q4_K", false),
    ("Q5_K", false),
    ("Q6_K", false),
    ("Q8_K", false),
    ("IQ2_XXS", false),
    ("IQ2_XS", false),
    ("IQ3_XXS", false),
    ("IQ1_S", false),
    ("IQ4_NL", false),
    ("IQ3_S", false),
    ("IQ2_S", false),
    ("IQ4_XS", false),
    ("I8", false),
    ("I16", false),
    ("I32", false),
    ("I64", false),
    ("F64", false),
    ("IQ1_M", false),
    ("BF16", false),
    ("Q4_0_4_4", true),
    ("Q4_0_4_8", true),
    ("Q4_0_8_8", true),
    ("TQ1_0", false),
    ("TQ2_0", false),
    ("IQ4_NL_4_4", true),
    ("IQ4_NL_4_8", true),
    ("IQ4_NL_8_8", true),
    ("MXFP4", false),
    ("NVFP4", false),
    ("Q1_0", false),
    ("Q2_0", false),
];

/// ggml's name for type id `id` and whether ggml has removed it (see [`GGML_TYPE_NAMES`]),
/// or `None` for an id ggml has never given out.
pub fn ggml_type_name(id: u32) -> Option<(&'static str, bool)> {
    GGML_TYPE_NAMES.get(usize::try_from(id).ok()?).copied()
}

/// The names of the types this crate reads ([`GgmlType::ALL`]), comma-separated.
pub fn supported_type_names() -> String {
    GgmlType::ALL.map(GgmlType::name).join(", ")
}

/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;

impl GgmlType {
    /// Every type this crate knows, in id order.
    pub const ALL: [GgmlType; 20] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::BF16,
    ];

    /// The type with GGUF id `id`, or `None` for ids this crate does not know
    /// (removed ggml types, the IQ family, and garbage).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The GGUF id of this type.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name llama.cpp prints for this type.
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            BF16 => "BF16",
        }
    }

    /// Parses a type name as printed by [`GgmlType::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 | I8 | I16 | I32 | I64 | F64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
            I8 => 1,
            I16 => 2,
            I32 => 4,
            I64 | F64 => 8,
        }
    }

    /// Bytes taken by `n` consecutive elements, or `None` when `n` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if n % bs != 0 {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }

    /// Whether this crate can turn the type into f32 (the types a model's weights may use).
    pub fn is_float_convertible(self) -> bool {
        use GgmlType::*;
        !matches!(self, Q8_1 | Q8_K | I8 | I16 | I32 | I64 | F64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_are_refused() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        for bad in [4u32, 5, 16, 23, 29, 31, 39, u32::MAX] {
            assert_eq!(GgmlType::from_id(bad), None, "id {bad}");
        }
    }

    #[test]
    fn the_name_table_agrees_with_the_known_types() {
        for t in GgmlType::ALL {
            assert_eq!(ggml_type_name(t.id()), Some((t.name(), false)));
        }
        assert_eq!(ggml_type_name(20), Some(("IQ4_NL", false)));
        assert_eq!(ggml_type_name(4), Some(("Q4_2", true)));
        assert_eq!(ggml_type_name(42), Some(("Q2_0", false)));
        assert_eq!(ggml_type_name(43), None);
        assert_eq!(ggml_type_name(u32::MAX), None);
    }

    #[test]
    fn bytes_for_checks_block_multiples() {
        assert_eq!(GgmlType::Q8_0.bytes_for(64), Some(68));
        assert_eq!(GgmlType::Q8_0.bytes_for(33), None);
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }
}
