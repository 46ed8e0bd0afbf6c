//! LZW as Go's `compress/lzw` writes it with `LSB` bit order and 8-bit
//! literals (memberlist's `compressMsg`): codes start 9 bits wide and grow to
//! 12, code 256 clears the table, 257 ends the stream; the writer starts
//! with a clear code and clears again when the table is full. The decoder is
//! bounded by an output limit (compression bombs) and rejects invalid codes.

use std::collections::HashMap;

const CLEAR: u32 = 256;
const EOF: u32 = 257;
const MAX_WIDTH: u32 = 12;
const MAX_CODE: u32 = (1 << MAX_WIDTH) - 1;

/// A stream Go's reader would refuse, or one over the size limit.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LzwError {
    #[error("lzw: invalid code {0}")]
    InvalidCode(u32),
    #[error("lzw: stream ends without an EOF code")]
    Truncated,
    #[error("lzw: output larger than {0} bytes")]
    TooLarge(usize),
}

/// Decompresses a whole stream, refusing more than `limit` output bytes.
pub fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, LzwError> {
    let mut out = Vec::new();
    let (mut bits, mut n_bits, mut pos) = (0u32, 0u32, 0usize);
    let mut width = 9u32;
    let mut hi = EOF;
    let mut overflow = 1u32 << width;
    let mut last: Option<u32> = None;
    // prefix/suffix of each code above EOF.
    let mut prefix = vec![0u32; 1 << MAX_WIDTH];
    let mut suffix = vec![0u8; 1 << MAX_WIDTH];
    let mut scratch = Vec::new();
    loop {
        while n_bits < width {
            let &b = input.get(pos).ok_or(LzwError::Truncated)?;
            pos += 1;
            bits |= u32::from(b) << n_bits;
            n_bits += 8;
        }
        let code = bits & ((1 << width) - 1);
        bits >>= width;
        n_bits -= width;
        if code == CLEAR {
            width = 9;
            hi = EOF;
            overflow = 1 << width;
            last = None;
            continue;
        }
        if code == EOF {
            return Ok(out);
        }
        if code > hi || (code == hi && last.is_none()) {
            return Err(LzwError::InvalidCode(code));
        }
        // Expand `code` (the special case code == hi: last's expansion + its head).
        scratch.clear();
        let mut c = if code == hi { last.unwrap_or(0) } else { code };
        while c > EOF {
            scratch.push(suffix[c as usize]);
            c = prefix[c as usize];
        }
        scratch.push(c as u8);
        scratch.reverse();
        let head = scratch[0];
        if code == hi {
            scratch.push(head);
        }
        if out.len() + scratch.len() > limit {
            return Err(LzwError::TooLarge(limit));
        }
        out.extend_from_slice(&scratch);
        if let Some(l) = last {
            suffix[hi as usize] = head;
            prefix[hi as usize] = l;
        }
        last = Some(code);
        hi += 1;
        if hi >= overflow {
            if width == MAX_WIDTH {
                last = None;
                hi -= 1;
            } else {
                width += 1;
                overflow = 1 << width;
            }
        }
    }
}

struct BitWriter {
    out: Vec<u8>,
    bits: u32,
    n_bits: u32,
}

impl BitWriter {
    fn write(&mut self, code: u32, width: u32) {
        self.bits |= code << self.n_bits;
        self.n_bits += width;
        while self.n_bits >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.n_bits -= 8;
        }
    }
}

/// Compresses `input` into a stream Go's `lzw.NewReader(r, lzw.LSB, 8)` reads.
pub fn compress(input: &[u8]) -> Vec<u8> {
    let mut w = BitWriter { out: Vec::new(), bits: 0, n_bits: 0 };
    let mut width = 9u32;
    let mut hi = EOF;
    let mut overflow = 1u32 << width;
    let mut table: HashMap<(u32, u8), u32> = HashMap::new();
    w.write(CLEAR, width);
    let Some((&first, rest)) = input.split_first() else {
        w.write(EOF, width);
        if w.n_bits > 0 {
            w.out.push(w.bits as u8);
        }
        return w.out;
    };
    let mut code = u32::from(first);
    // Returns false when the table was full and got cleared.
    let inc_hi =
        |hi: &mut u32, width: &mut u32, overflow: &mut u32, w: &mut BitWriter, table: &mut HashMap<(u32, u8), u32>| {
            *hi += 1;
            if *hi == *overflow {
                *width += 1;
                *overflow <<= 1;
            }
            if *hi == MAX_CODE {
                w.write(CLEAR, *width);
                *width = 9;
                *hi = EOF;
                *overflow = 1 << *width;
                table.clear();
                return false;
            }
            true
        };
    for &x in rest {
        if let Some(&c) = table.get(&(code, x)) {
            code = c;
            continue;
        }
        w.write(code, width);
        let key = (code, x);
        code = u32::from(x);
        if inc_hi(&mut hi, &mut width, &mut overflow, &mut w, &mut table) {
            table.insert(key, hi);
        }
    }
    w.write(code, width);
    inc_hi(&mut hi, &mut width, &mut overflow, &mut w, &mut table);
    w.write(EOF, width);
    if w.n_bits > 0 {
        w.out.push(w.bits as u8);
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_including_table_resets() {
        let mut big = Vec::new();
        let mut x = 12345u32;
        for i in 0..200_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            big.push(if i % 3 == 0 { (x >> 16) as u8 } else { b'a' + (i % 7) as u8 });
        }
        for input in [&b""[..], b"a", b"aaaaaaaaaaaaaaaaaaaaaaa", b"TOBEORNOTTOBEORTOBEORNOT", &big] {
            let c = compress(input);
            assert_eq!(decompress(&c, 1 << 20).unwrap(), input, "len {}", input.len());
        }
    }

    #[test]
    fn bad_streams_are_refused() {
        assert_eq!(decompress(&[], 10), Err(LzwError::Truncated));
        // Clear, then a code far above the table.
        let mut w = BitWriter { out: Vec::new(), bits: 0, n_bits: 0 };
        w.write(CLEAR, 9);
        w.write(400, 9);
        w.write(EOF, 9);
        w.out.push(w.bits as u8);
        assert_eq!(decompress(&w.out, 10), Err(LzwError::InvalidCode(400)));
        let bomb = compress(&vec![0u8; 100_000]);
        assert_eq!(decompress(&bomb, 1000), Err(LzwError::TooLarge(1000)));
    }
}
