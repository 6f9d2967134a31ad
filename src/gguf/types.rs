//! GGUF metadata values: the value type ids of the format and the [`Value`] tree they decode to.

use std::fmt;

/// The type id stored before every metadata value (and once per array for its items).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// Every value type, in id order.
    pub const ALL: [ValueType; 13] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::Bool,
        ValueType::String,
        ValueType::Array,
        ValueType::U64,
        ValueType::I64,
        ValueType::F64,
    ];

    /// The type with id `id`, or `None` for ids the format does not define.
    pub fn from_id(id: u32) -> Option<ValueType> {
        ValueType::ALL.get(usize::try_from(id).ok()?).copied()
    }

    /// The id written to the file.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// A short lower-case name (`"u32"`, `"string"`, `"array"`), used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    /// The encoded size of a value of this type, or `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<usize> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }

    /// The fewest bytes a value of this type can take: its fixed size, 8 for a string (the
    /// length), 12 for an array (item type and count). Used to refuse counts before allocating.
    pub fn min_encoded_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            other => other.fixed_size().unwrap_or(1),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// An array value: one item type for all items. Items of an `Array`-typed array are arrays
/// themselves, each with its own item type (arrays may nest).
///
/// Arrays of strings and of scalars are stored compactly (a vocabulary of 49k tokens costs
/// its text plus 4 bytes a token, not a `Value` and an allocation per token): one text
/// buffer with the end of each string, or the scalars' little-endian bytes. Items are read
/// with [`Array::get`] (owned) or [`Array::str_at`] (borrowed). An array built item by item
/// with [`Array::new`] whose items do not all have `elem_type` keeps them as they are, and
/// the writer refuses it (see [`crate::gguf::GgufWriter::validate`]).
#[derive(Clone, Debug)]
pub struct Array {
    pub elem_type: ValueType,
    items: Items,
}

#[derive(Clone, Debug)]
enum Items {
    /// Nested arrays, and items that do not all have the array's type.
    Values(Vec<Value>),
    /// Every item a string: their text back to back, and where each ends.
    Strings { text: String, ends: Vec<usize> },
    /// Every item a fixed-size scalar of the array's type, little-endian (bools as 0 or 1).
    Scalars(Vec<u8>),
}

/// One item of an array, borrowed from its storage (for the writer).
pub(crate) enum ItemRef<'a> {
    Str(&'a str),
    /// A scalar's little-endian bytes.
    Scalar(&'a [u8]),
    Value(&'a Value),
}

/// Appends the little-endian bytes of a scalar value (as GGUF stores it; the writer's
/// encoding of scalars too).
pub(crate) fn scalar_bytes(v: &Value, out: &mut Vec<u8>) {
    match *v {
        Value::U8(x) => out.push(x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(x)),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::String(_) | Value::Array(_) => unreachable!("not a scalar"),
    }
}

/// The scalar of type `ty` in little-endian `b` (`b.len()` is the type's size).
fn scalar_value(ty: ValueType, b: &[u8]) -> Value {
    fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        a
    }
    match ty {
        ValueType::U8 => Value::U8(b[0]),
        ValueType::I8 => Value::I8(b[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(arr(b))),
        ValueType::I16 => Value::I16(i16::from_le_bytes(arr(b))),
        ValueType::U32 => Value::U32(u32::from_le_bytes(arr(b))),
        ValueType::I32 => Value::I32(i32::from_le_bytes(arr(b))),
        ValueType::F32 => Value::F32(f32::from_le_bytes(arr(b))),
        ValueType::Bool => Value::Bool(b[0] != 0),
        ValueType::U64 => Value::U64(u64::from_le_bytes(arr(b))),
        ValueType::I64 => Value::I64(i64::from_le_bytes(arr(b))),
        ValueType::F64 => Value::F64(f64::from_le_bytes(arr(b))),
        ValueType::String | ValueType::Array => unreachable!("not a scalar"),
    }
}

impl Array {
    /// An array of `items`, all of type `elem_type` (stored compactly when they are).
    pub fn new(elem_type: ValueType, items: Vec<Value>) -> Array {
        let all_match = items.iter().all(|v| v.value_type() == elem_type);
        let items = match elem_type {
            ValueType::String if all_match => {
                let mut text = String::new();
                let mut ends = Vec::with_capacity(items.len());
                for v in &items {
                    text.push_str(v.as_str().unwrap_or_default());
                    ends.push(text.len());
                }
                Items::Strings { text, ends }
            }
            ValueType::Array => Items::Values(items),
            _ if all_match => {
                let mut bytes =
                    Vec::with_capacity(items.len() * elem_type.fixed_size().unwrap_or(1));
                for v in &items {
                    scalar_bytes(v, &mut bytes);
                }
                Items::Scalars(bytes)
            }
            _ => Items::Values(items),
        };
        Array { elem_type, items }
    }

    /// An array of strings.
    pub fn from_strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Array {
        let mut text = String::new();
        let mut ends = Vec::new();
        for s in items {
            text.push_str(s.as_ref());
            ends.push(text.len());
        }
        Array::strings(text, ends)
    }

    /// A string array from its text and where each string ends (non-decreasing, at most
    /// `text.len()`, on character boundaries; the parser checks this).
    pub(crate) fn strings(text: String, ends: Vec<usize>) -> Array {
        Array {
            elem_type: ValueType::String,
            items: Items::Strings { text, ends },
        }
    }

    /// A scalar array from its little-endian bytes (a whole number of `elem_type` items;
    /// bools as 0 or 1).
    pub(crate) fn scalars(elem_type: ValueType, bytes: Vec<u8>) -> Array {
        Array {
            elem_type,
            items: Items::Scalars(bytes),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        match &self.items {
            Items::Values(v) => v.len(),
            Items::Strings { ends, .. } => ends.len(),
            Items::Scalars(b) => b.len() / self.elem_type.fixed_size().unwrap_or(1).max(1),
        }
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item `i`, borrowed from the array's storage.
    pub(crate) fn item(&self, i: usize) -> Option<ItemRef<'_>> {
        match &self.items {
            Items::Values(v) => v.get(i).map(ItemRef::Value),
            Items::Strings { text, ends } => {
                let end = *ends.get(i)?;
                let start = if i == 0 { 0 } else { ends[i - 1] };
                Some(ItemRef::Str(&text[start..end]))
            }
            Items::Scalars(b) => {
                let n = self.elem_type.fixed_size().unwrap_or(1);
                b.get(i * n..(i + 1) * n).map(ItemRef::Scalar)
            }
        }
    }

    /// Item `i` as a value (strings are copied).
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self.item(i)? {
            ItemRef::Str(s) => Value::String(s.to_owned()),
            ItemRef::Scalar(b) => scalar_value(self.elem_type, b),
            ItemRef::Value(v) => v.clone(),
        })
    }

    /// Item `i`, if it is a string.
    pub fn str_at(&self, i: usize) -> Option<&str> {
        match self.item(i)? {
            ItemRef::Str(s) => Some(s),
            ItemRef::Value(v) => v.as_str(),
            ItemRef::Scalar(_) => None,
        }
    }

    /// Every item as a value, in order (strings are copied).
    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The items as string slices, or `None` if any item is not a string.
    pub fn as_strs(&self) -> Option<Vec<&str>> {
        (0..self.len()).map(|i| self.str_at(i)).collect()
    }

    /// The first item whose type is not `elem_type`, with its index (nested arrays checked too).
    pub(crate) fn first_mismatch(&self) -> Option<(usize, ValueType, ValueType)> {
        let Items::Values(items) = &self.items else {
            return None;
        };
        for (i, item) in items.iter().enumerate() {
            if item.value_type() != self.elem_type {
                return Some((i, self.elem_type, item.value_type()));
            }
            if let Value::Array(inner) = item {
                if let Some(m) = inner.first_mismatch() {
                    return Some(m);
                }
            }
        }
        None
    }
}

/// Arrays are equal when their item types and items are, however they are stored.
impl PartialEq for Array {
    fn eq(&self, other: &Array) -> bool {
        self.elem_type == other.elem_type
            && self.len() == other.len()
            && (0..self.len()).all(|i| match (self.item(i), other.item(i)) {
                (Some(ItemRef::Str(a)), Some(ItemRef::Str(b))) => a == b,
                (Some(ItemRef::Scalar(a)), Some(ItemRef::Scalar(b))) => {
                    // Compare as values (float NaN semantics as `Value`'s).
                    scalar_value(self.elem_type, a) == scalar_value(other.elem_type, b)
                }
                _ => self.get(i) == other.get(i),
            })
    }
}

impl Value {
    /// The type id this value is written with.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The name of the value's type (see [`ValueType::name`]).
    pub fn type_name(&self) -> &'static str {
        self.value_type().name()
    }

    /// Any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type holding a value that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// F32, F64, or any integer (64-bit integers beyond 2^53 are rounded).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The array, if this is an array.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short description for error messages: the type, and the value for scalars
    /// (`"i32 -1"`, `"string"`, `"array of u32 (3 items)"`).
    pub fn describe(&self) -> String {
        match self {
            Value::U8(v) => format!("u8 {v}"),
            Value::I8(v) => format!("i8 {v}"),
            Value::U16(v) => format!("u16 {v}"),
            Value::I16(v) => format!("i16 {v}"),
            Value::U32(v) => format!("u32 {v}"),
            Value::I32(v) => format!("i32 {v}"),
            Value::F32(v) => format!("f32 {v}"),
            Value::Bool(v) => format!("bool {v}"),
            Value::String(_) => "string".to_owned(),
            Value::Array(a) => format!("array of {} ({} items)", a.elem_type, a.len()),
            Value::U64(v) => format!("u64 {v}"),
            Value::I64(v) => format!("i64 {v}"),
            Value::F64(v) => format!("f64 {v}"),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v)
            }
        })*
    };
}

value_from!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, Array => Array, u64 => U64, i64 => I64, f64 => F64);

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in ValueType::ALL {
            assert_eq!(ValueType::from_id(t.id()), Some(t));
        }
        assert_eq!(ValueType::from_id(13), None);
        assert_eq!(ValueType::from_id(u32::MAX), None);
    }

    #[test]
    fn integer_accessors_check_range() {
        assert_eq!(Value::I8(-1).as_u64(), None);
        assert_eq!(Value::I8(-1).as_i64(), Some(-1));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::U16(7).as_f64(), Some(7.0));
        assert_eq!(Value::F32(0.5).as_u64(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
    }

    #[test]
    fn compact_arrays_read_back_their_items() {
        let texts = ["a", "", "ünï", "▁x y"];
        let a = Array::new(
            ValueType::String,
            texts.iter().map(|&t| Value::from(t)).collect(),
        );
        assert_eq!(a, Array::from_strings(texts));
        assert_eq!(a.len(), 4);
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(a.str_at(i), Some(*t));
            assert_eq!(a.get(i), Some(Value::from(*t)));
        }
        assert_eq!((a.str_at(4), a.get(4)), (None, None));
        assert_eq!(a.as_strs().unwrap(), texts);
        assert_ne!(a, Array::from_strings(["a", "", "ünï", "▁x"]));

        let vals = [Value::F32(1.5), Value::F32(-2.0), Value::F32(0.0)];
        let f = Array::new(ValueType::F32, vals.to_vec());
        assert_eq!(f.iter().collect::<Vec<_>>(), vals);
        assert_eq!(f.str_at(0), None);
        assert_ne!(f, Array::new(ValueType::F64, vec![Value::F64(1.5)]));
        let b = Array::new(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]);
        assert_eq!(b.get(0), Some(Value::Bool(true)));
        assert_eq!(b.get(1), Some(Value::Bool(false)));
        let i = Array::new(ValueType::I64, vec![Value::I64(-7), Value::I64(i64::MAX)]);
        assert_eq!(i.get(1), Some(Value::I64(i64::MAX)));
        // Nested arrays keep their items as values.
        let n = Array::new(ValueType::Array, vec![Value::Array(f.clone())]);
        assert_eq!(n.get(0), Some(Value::Array(f)));
        assert_eq!(Array::new(ValueType::U8, Vec::new()).len(), 0);
    }

    #[test]
    fn mismatched_items_are_found() {
        let ok = Array::new(ValueType::U32, vec![Value::U32(1), Value::U32(2)]);
        assert_eq!(ok.first_mismatch(), None);
        let nested = Array::new(
            ValueType::Array,
            vec![
                Value::Array(ok),
                Value::Array(Array::new(ValueType::I8, vec![Value::U8(1)])),
            ],
        );
        assert_eq!(
            nested.first_mismatch(),
            Some((0, ValueType::I8, ValueType::U8))
        );
    }
}
