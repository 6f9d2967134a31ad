//! C strings, paths and buffers in and out, checked.

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use crate::status::{fail, invalid, FResult, Status};

/// The bytes of a NUL-terminated string, or an error naming `what` when it is NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
pub unsafe fn bytes<'a>(p: *const c_char, what: &str) -> FResult<&'a [u8]> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    Ok(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// As [`bytes`].
pub unsafe fn text<'a>(p: *const c_char, what: &str) -> FResult<&'a str> {
    // SAFETY: forwarded.
    let b = unsafe { bytes(p, what)? };
    std::str::from_utf8(b).map_err(|e| invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// An optional string: NULL gives `None`.
///
/// # Safety
/// As [`bytes`].
pub unsafe fn opt_text<'a>(p: *const c_char, what: &str) -> FResult<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded.
        unsafe { text(p, what) }.map(Some)
    }
}

/// A file path: any bytes on Unix, UTF-8 elsewhere. Empty is refused.
///
/// # Safety
/// As [`bytes`].
pub unsafe fn path(p: *const c_char, what: &str) -> FResult<PathBuf> {
    // SAFETY: forwarded.
    let b = unsafe { bytes(p, what)? };
    if b.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(b)))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(b)
            .map(PathBuf::from)
            .map_err(|e| invalid(format!("{what} is not valid UTF-8: {e}")))
    }
}

/// An optional path: NULL gives `None`.
///
/// # Safety
/// As [`bytes`].
pub unsafe fn opt_path(p: *const c_char, what: &str) -> FResult<Option<PathBuf>> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded.
        unsafe { path(p, what) }.map(Some)
    }
}

/// A slice of `n` items at `p` (NULL allowed only when `n` is 0).
///
/// # Safety
/// `p` is NULL or points to `n` initialised items valid during the call.
pub unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> FResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL but its count is {n}")));
    }
    if n.checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(invalid(format!("{what}: count {n} is too large")));
    }
    // SAFETY: non-NULL, `n` items per the caller's contract, size checked above.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Writes `value` through an out-pointer, or fails naming `what` when it is NULL.
///
/// # Safety
/// `p` is NULL or valid for a write of `T`.
pub unsafe fn put<T>(p: *mut T, value: T, what: &str) -> FResult<()> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and writable per the caller's contract.
    unsafe { p.write(value) };
    Ok(())
}

/// Writes `value` through an out-pointer if it is not NULL.
///
/// # Safety
/// As [`put`].
pub unsafe fn put_opt<T>(p: *mut T, value: T) {
    if !p.is_null() {
        // SAFETY: non-NULL and writable per the caller's contract.
        unsafe { p.write(value) };
    }
}

/// Reads a caller's struct whose first field is `uint32_t struct_size`, after checking that
/// the size is this version's.
///
/// # Safety
/// `p` is NULL or points to at least 4 readable bytes, and to a whole `T` when those say
/// `size_of::<T>()`. `T` is plain data (any bit pattern valid).
pub unsafe fn read_sized<T: Copy>(p: *const T, what: &str) -> FResult<T> {
    // SAFETY: forwarded; checks NULL and the size.
    unsafe { check_size(p.cast(), std::mem::size_of::<T>(), what)? };
    // SAFETY: the size matches, so the caller's struct is a whole `T`.
    Ok(unsafe { p.read_unaligned() })
}

/// Checks the `struct_size` field at `p` against `size`.
///
/// # Safety
/// `p` is NULL or points to at least 4 readable bytes.
pub unsafe fn check_size(p: *const u8, size: usize, what: &str) -> FResult<()> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL; the first field of every sized struct is a u32.
    let got = unsafe { p.cast::<u32>().read_unaligned() };
    if got as usize != size {
        return Err(invalid(format!(
            "{what}->struct_size is {got}, but this library's {what} has {size} bytes: set it to sizeof (or use the _default function), and use the header that came with the library"
        )));
    }
    Ok(())
}

/// Fills a caller's sized struct (its `struct_size` must be this version's) with `value`.
///
/// # Safety
/// As [`read_sized`], and `p` writable.
pub unsafe fn write_sized<T: Copy>(p: *mut T, value: T, what: &str) -> FResult<()> {
    // SAFETY: forwarded.
    unsafe { check_size(p.cast_const().cast(), std::mem::size_of::<T>(), what)? };
    // SAFETY: the caller's struct is a whole writable `T`.
    unsafe { p.write_unaligned(value) };
    Ok(())
}

/// Copies `s` into a caller buffer of `cap` bytes as a NUL-terminated string, cut at a
/// character boundary if needed; returns the full length. Nothing is written when `buf` is
/// NULL or `cap` is 0.
///
/// # Safety
/// `buf` is NULL or valid for `cap` bytes of writes.
pub unsafe fn copy_truncated(s: &[u8], buf: *mut c_char, cap: usize) -> usize {
    if buf.is_null() || cap == 0 {
        return s.len();
    }
    let mut n = s.len().min(cap - 1);
    // Do not cut a UTF-8 sequence: back up to a character start.
    while n > 0 && n < s.len() && (s[n] & 0xC0) == 0x80 {
        n -= 1;
    }
    // SAFETY: `n + 1 <= cap` bytes are written into the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    s.len()
}

/// Copies `s` and a NUL into a caller buffer if it fits, setting `*len` to `s.len()`
/// either way; [`Status::BufferTooSmall`] when it does not fit.
///
/// # Safety
/// `buf` is NULL or valid for `cap` bytes; `len` is NULL or writable.
pub unsafe fn copy_exact(s: &[u8], buf: *mut c_char, cap: usize, len: *mut usize) -> FResult<()> {
    // SAFETY: forwarded.
    unsafe { put(len, s.len(), "length")? };
    if s.len() >= cap {
        return Err(fail(
            Status::BufferTooSmall,
            format!(
                "the text has {} bytes and needs {} with its NUL; the buffer holds {cap}",
                s.len(),
                s.len() + 1
            ),
        ));
    }
    if buf.is_null() {
        return Err(invalid(format!("text is NULL but its capacity is {cap}")));
    }
    // SAFETY: s.len() + 1 <= cap bytes into the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
    }
    Ok(())
}

/// A fixed-size C char array holding `s` (cut at a character boundary to fit with its NUL).
pub fn fixed<const N: usize>(s: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    // SAFETY: `out` has N writable bytes.
    unsafe { copy_truncated(s.as_bytes(), out.as_mut_ptr(), N) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        let mut b = [1 as c_char; 5];
        // "aé€": 1 + 2 + 3 bytes; 4 bytes of room cut before the euro sign.
        let s = "aé€".as_bytes();
        assert_eq!(unsafe { copy_truncated(s, b.as_mut_ptr(), 5) }, 6);
        let got: Vec<u8> = b.iter().map(|&c| c as u8).collect();
        assert_eq!(&got[..4], &[b'a', 0xC3, 0xA9, 0]);
        let f: [c_char; 3] = fixed("abcdef");
        assert_eq!(f.map(|c| c as u8), [b'a', b'b', 0]);
    }
}
