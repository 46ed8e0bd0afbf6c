//! The subset of MessagePack that memberlist speaks, as hashicorp's
//! go-msgpack writes it with `MsgpackHandle{}`: structs as maps keyed by field
//! name, strings and `[]byte` (also `[]uint8` such as `Vsn`) as the old spec's
//! "raw" type (`0xa0..0xbf`, `0xda`, `0xdb`), integers in their shortest form.
//! The decoder also accepts the newer `str8`/`bin*` types and every integer
//! width, and is bounded: nesting depth and declared lengths are checked
//! against the input, so hostile bytes cannot make it allocate or recurse
//! without limit.

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Float(f64),
    /// raw, str or bin: memberlist does not tell strings from bytes.
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

/// Malformed MessagePack.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated msgpack at byte {0}")]
    Truncated(usize),
    #[error("unsupported msgpack type byte {byte:#04x} at byte {at}")]
    Unsupported { byte: u8, at: usize },
    #[error("msgpack nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("msgpack field {field}: {why}")]
    Field { field: &'static str, why: &'static str },
}

const MAX_DEPTH: usize = 16;

impl Value {
    /// The entry `key` of a map (keys compared as bytes).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => {
                m.iter().find(|(k, _)| matches!(k, Value::Bytes(b) if b == key.as_bytes())).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(u) => Some(*u),
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// Reads one value from the start of `buf`; returns it and the bytes used.
pub fn decode(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(DecodeError::Truncated(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// A declared element count must fit in what is left (each element
    /// takes at least one byte), so lengths cannot force huge allocations.
    fn count(&self, n: u64) -> Result<usize, DecodeError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left { Err(DecodeError::Truncated(self.pos)) } else { Ok(n as usize) }
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let at = self.pos;
        let b = self.take(1)?[0];
        let v = match b {
            0x00..=0x7f => Value::Uint(u64::from(b)),
            0xe0..=0xff => Value::Int(i64::from(b as i8)),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xcc => Value::Uint(self.be(1)?),
            0xcd => Value::Uint(self.be(2)?),
            0xce => Value::Uint(self.be(4)?),
            0xcf => Value::Uint(self.be(8)?),
            0xd0 => Value::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Value::Int(self.be(8)? as i64),
            0xca => Value::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.be(8)?)),
            0xa0..=0xbf => Value::Bytes(self.take(usize::from(b & 0x1f))?.to_vec()),
            0xd9 | 0xc4 => {
                let n = self.be(1)? as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            0xda | 0xc5 => {
                let n = self.be(2)? as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            0xdb | 0xc6 => {
                let n = self.be(4)? as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            0x90..=0x9f => self.array(u64::from(b & 0x0f), depth)?,
            0xdc => {
                let n = self.be(2)?;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.be(4)?;
                self.array(n, depth)?
            }
            0x80..=0x8f => self.map(u64::from(b & 0x0f), depth)?,
            0xde => {
                let n = self.be(2)?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.be(4)?;
                self.map(n, depth)?
            }
            byte => return Err(DecodeError::Unsupported { byte, at }),
        };
        Ok(v)
    }

    fn array(&mut self, n: u64, depth: usize) -> Result<Value, DecodeError> {
        let n = self.count(n)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(v))
    }

    fn map(&mut self, n: u64, depth: usize) -> Result<Value, DecodeError> {
        let n = self.count(n.saturating_mul(2))? / 2;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let val = self.value(depth + 1)?;
            v.push((k, val));
        }
        Ok(Value::Map(v))
    }
}

/// Writes values the way go-msgpack's `MsgpackHandle{}` does.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn uint(&mut self, v: u64) -> &mut Self {
        match v {
            0..=0x7f => self.buf.push(v as u8),
            0x80..=0xff => self.buf.extend([0xcc, v as u8]),
            0x100..=0xffff => {
                self.buf.push(0xcd);
                self.buf.extend((v as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.buf.push(0xce);
                self.buf.extend((v as u32).to_be_bytes());
            }
            _ => {
                self.buf.push(0xcf);
                self.buf.extend(v.to_be_bytes());
            }
        }
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(if v { 0xc3 } else { 0xc2 });
        self
    }

    pub fn nil(&mut self) -> &mut Self {
        self.buf.push(0xc0);
        self
    }

    /// A string or byte slice, as the old spec's raw type.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        match b.len() {
            n @ 0..=31 => self.buf.push(0xa0 | n as u8),
            n @ 32..=0xffff => {
                self.buf.push(0xda);
                self.buf.extend((n as u16).to_be_bytes());
            }
            n => {
                self.buf.push(0xdb);
                self.buf.extend((n as u32).to_be_bytes());
            }
        }
        self.buf.extend_from_slice(b);
        self
    }

    /// A byte slice field: go-msgpack writes a nil slice as nil.
    pub fn opt_raw(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            Some(b) => self.raw(b),
            None => self.nil(),
        }
    }

    /// A map header for `n` fields (each then written as key, value).
    pub fn map(&mut self, n: usize) -> &mut Self {
        if n < 16 {
            self.buf.push(0x80 | n as u8);
        } else {
            self.buf.push(0xde);
            self.buf.extend((n as u16).to_be_bytes());
        }
        self
    }

    /// A field name.
    pub fn key(&mut self, k: &str) -> &mut Self {
        self.raw(k.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut w = Writer::default();
        w.map(5);
        w.key("SeqNo").uint(70_000);
        w.key("Node").raw(b"n1");
        w.key("Meta").opt_raw(None);
        w.key("Join").bool(true);
        w.key("Big").raw(&[7u8; 40]);
        let (v, used) = decode(&w.buf).unwrap();
        assert_eq!(used, w.buf.len());
        assert_eq!(v.get("SeqNo").and_then(Value::as_u64), Some(70_000));
        assert_eq!(v.get("Node").and_then(Value::as_bytes), Some(&b"n1"[..]));
        assert_eq!(v.get("Meta"), Some(&Value::Nil));
        assert_eq!(v.get("Join"), Some(&Value::Bool(true)));
        assert_eq!(v.get("Big").and_then(Value::as_bytes).map(<[u8]>::len), Some(40));
        // The exact bytes go-msgpack writes for {"SeqNo": 70000} (uint32 form).
        let mut w = Writer::default();
        w.map(1).key("SeqNo").uint(70_000);
        assert_eq!(w.buf, [0x81, 0xa5, b'S', b'e', b'q', b'N', b'o', 0xce, 0x00, 0x01, 0x11, 0x70]);
    }

    #[test]
    fn newer_types_and_signed_ints_decode() {
        assert_eq!(decode(&[0xd9, 2, b'h', b'i']).unwrap().0, Value::Bytes(b"hi".to_vec()));
        assert_eq!(decode(&[0xc4, 1, 9]).unwrap().0, Value::Bytes(vec![9]));
        assert_eq!(decode(&[0xd0, 0xff]).unwrap().0, Value::Int(-1));
        assert_eq!(
            decode(&[0x93, 1, 2, 3]).unwrap().0,
            Value::Array(vec![Value::Uint(1), Value::Uint(2), Value::Uint(3)])
        );
    }

    #[test]
    fn hostile_input_is_refused_cheaply() {
        // A map claiming 4 billion entries in 5 bytes.
        assert!(matches!(decode(&[0xdf, 0xff, 0xff, 0xff, 0xff]), Err(DecodeError::Truncated(_))));
        // A raw32 claiming 4 GB.
        assert!(matches!(decode(&[0xdb, 0xff, 0xff, 0xff, 0xff, 1]), Err(DecodeError::Truncated(_))));
        // Deep nesting.
        assert_eq!(decode(&[0x91; 64]), Err(DecodeError::TooDeep));
        assert!(matches!(decode(&[0xc1]), Err(DecodeError::Unsupported { byte: 0xc1, .. })));
        assert!(decode(&[]).is_err());
    }
}
