//! memberlist's encryption: AES-GCM (128/192/256-bit keys) with a keyring
//! of one primary key (encrypts) and others (also decrypt), for rotation:
//! install a key everywhere, make it primary, remove the old one.
//!
//! Wire format: `[version][12-byte nonce][ciphertext + 16-byte tag]`;
//! version 0 pads the plaintext PKCS#7 to 16 bytes (memberlist protocol 1),
//! version 1 does not. Packets are encrypted whole with no associated data;
//! streams are `[10][u32 BE length][encrypted]` with those 5 bytes as the
//! associated data.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};

type Aes192Gcm = AesGcm<aes_gcm::aes::Aes192, aes_gcm::aead::consts::U12>;

const NONCE: usize = 12;
const TAG: usize = 16;

/// A refused key or message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    #[error("a key must be 16, 24 or 32 bytes (AES-128/192/256), not {0}")]
    KeySize(usize),
    #[error("the keyring has no key {0}")]
    NoSuchKey(String),
    #[error("the primary key cannot be removed: make another key primary first")]
    RemovePrimary,
    #[error("encrypted message too short")]
    Short,
    #[error("unsupported encryption version {0}")]
    Version(u8),
    #[error("no key in the keyring decrypts this message")]
    NoKey,
}

/// The keys a member holds; the first is the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Vec<u8>>,
}

fn check(key: &[u8]) -> Result<(), SecurityError> {
    if matches!(key.len(), 16 | 24 | 32) { Ok(()) } else { Err(SecurityError::KeySize(key.len())) }
}

fn seal(key: &[u8], nonce: &[u8], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let n = Nonce::from_slice(nonce);
    let p = Payload { msg, aad };
    let r = match key.len() {
        16 => Aes128Gcm::new_from_slice(key).ok().and_then(|c| c.encrypt(n, p).ok()),
        24 => Aes192Gcm::new_from_slice(key).ok().and_then(|c| c.encrypt(n, p).ok()),
        _ => Aes256Gcm::new_from_slice(key).ok().and_then(|c| c.encrypt(n, p).ok()),
    };
    r.unwrap_or_default()
}

fn open(key: &[u8], nonce: &[u8], ct: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let n = Nonce::from_slice(nonce);
    let p = Payload { msg: ct, aad };
    match key.len() {
        16 => Aes128Gcm::new_from_slice(key).ok()?.decrypt(n, p).ok(),
        24 => Aes192Gcm::new_from_slice(key).ok()?.decrypt(n, p).ok(),
        _ => Aes256Gcm::new_from_slice(key).ok()?.decrypt(n, p).ok(),
    }
}

impl Keyring {
    /// A keyring with `primary` and other decryption keys.
    pub fn new(primary: Vec<u8>, others: Vec<Vec<u8>>) -> Result<Keyring, SecurityError> {
        check(&primary)?;
        let mut keys = vec![primary];
        for k in others {
            check(&k)?;
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        Ok(Keyring { keys })
    }

    /// Adds a decryption key (no-op if present).
    pub fn install(&mut self, key: Vec<u8>) -> Result<(), SecurityError> {
        check(&key)?;
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
        Ok(())
    }

    /// Makes an installed key the primary one.
    pub fn use_key(&mut self, key: &[u8]) -> Result<(), SecurityError> {
        let i = self.keys.iter().position(|k| k == key).ok_or_else(|| SecurityError::NoSuchKey(hex(key)))?;
        let k = self.keys.remove(i);
        self.keys.insert(0, k);
        Ok(())
    }

    /// Removes a non-primary key.
    pub fn remove(&mut self, key: &[u8]) -> Result<(), SecurityError> {
        if self.keys.first().is_some_and(|k| k == key) {
            return Err(SecurityError::RemovePrimary);
        }
        let before = self.keys.len();
        self.keys.retain(|k| k != key);
        if self.keys.len() == before {
            return Err(SecurityError::NoSuchKey(hex(key)));
        }
        Ok(())
    }

    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// Encrypts with the primary key (version 1: no padding).
    pub fn encrypt(&self, msg: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let mut out = Vec::with_capacity(1 + NONCE + msg.len() + TAG);
        out.push(1);
        out.extend_from_slice(&nonce);
        out.extend(seal(&self.keys[0], &nonce, msg, aad));
        out
    }

    /// Decrypts with whichever key fits (versions 0 and 1).
    pub fn decrypt(&self, buf: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecurityError> {
        if buf.len() < 1 + NONCE + TAG {
            return Err(SecurityError::Short);
        }
        let vsn = buf[0];
        if vsn > 1 {
            return Err(SecurityError::Version(vsn));
        }
        let (nonce, ct) = buf[1..].split_at(NONCE);
        for k in &self.keys {
            if let Some(mut plain) = open(k, nonce, ct, aad) {
                if vsn == 0 {
                    // PKCS#7: the last byte says how many to drop.
                    let pad = usize::from(*plain.last().unwrap_or(&0));
                    if pad == 0 || pad > 16 || pad > plain.len() {
                        return Err(SecurityError::Short);
                    }
                    plain.truncate(plain.len() - pad);
                }
                return Ok(plain);
            }
        }
        Err(SecurityError::NoKey)
    }

    /// A stream message: `[10][len][encrypted]`, the header and the
    /// stream's label (if any) authenticated, as memberlist does.
    pub fn encrypt_stream(&self, msg: &[u8], label: &[u8]) -> Vec<u8> {
        let len = (1 + NONCE + msg.len() + TAG) as u32;
        let mut header = vec![crate::wire::MsgType::Encrypt as u8];
        header.extend(len.to_be_bytes());
        let mut aad = header.clone();
        aad.extend_from_slice(label);
        let body = self.encrypt(msg, &aad);
        header.extend(body);
        header
    }
}

fn hex(k: &[u8]) -> String {
    let s: String = k.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{s}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rotation_and_refusals() {
        let (k1, k2) = (vec![1u8; 16], vec![2u8; 32]);
        let mut a = Keyring::new(k1.clone(), vec![]).unwrap();
        let b = Keyring::new(k2.clone(), vec![k1.clone()]).unwrap();
        let ct = a.encrypt(b"hello", b"");
        assert_eq!(ct[0], 1);
        assert_eq!(ct.len(), 1 + 12 + 5 + 16);
        assert_eq!(b.decrypt(&ct, b"").unwrap(), b"hello", "a secondary key decrypts");
        assert_eq!(b.decrypt(&ct, b"x"), Err(SecurityError::NoKey), "associated data is authenticated");
        let other = Keyring::new(vec![3u8; 24], vec![]).unwrap();
        assert_eq!(other.decrypt(&ct, b""), Err(SecurityError::NoKey), "a wrong key is refused");
        let mut tampered = ct.clone();
        tampered[14] ^= 1;
        assert_eq!(a.decrypt(&tampered, b""), Err(SecurityError::NoKey));
        assert_eq!(a.decrypt(&ct[..10], b""), Err(SecurityError::Short));
        // Rotation: install, use, remove the old one.
        a.install(k2.clone()).unwrap();
        a.use_key(&k2).unwrap();
        assert_eq!(a.remove(&k2), Err(SecurityError::RemovePrimary));
        a.remove(&k1).unwrap();
        assert_eq!(a.keys(), std::slice::from_ref(&k2));
        assert_eq!(b.decrypt(&a.encrypt(b"x", b""), b"").unwrap(), b"x");
        assert!(Keyring::new(vec![0; 15], vec![]).is_err());
        // Version 0 (padded), as protocol-1 members send it.
        let mut v0 = vec![0u8];
        let nonce = [7u8; 12];
        v0.extend_from_slice(&nonce);
        let mut padded = b"hi".to_vec();
        padded.extend([14u8; 14]);
        v0.extend(seal(&k2, &nonce, &padded, b""));
        assert_eq!(b.decrypt(&v0, b"").unwrap(), b"hi");
        // Streams authenticate their header.
        let s = b.encrypt_stream(b"state", b"");
        assert_eq!(s[0], 10);
        assert_eq!(b.decrypt(&s[5..], &s[..5]).unwrap(), b"state");
        // ... and the stream's label, when there is one.
        let s = b.encrypt_stream(b"state", b"prod");
        let aad = [&s[..5], b"prod"].concat();
        assert_eq!(b.decrypt(&s[5..], &aad).unwrap(), b"state");
        assert_eq!(b.decrypt(&s[5..], &s[..5]), Err(SecurityError::NoKey), "the label is authenticated");
    }
}
