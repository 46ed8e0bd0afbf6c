//! Unpacks a rootfs tarball (plain or gzip) into a directory, refusing every
//! entry that would land outside it (absolute paths, `..`, links escaping the
//! root are made harmless by the tar crate's `unpack_in` checks), skipping
//! device nodes (containers get a minimal /dev of their own), and bounding the
//! total size.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use tar::EntryType;

use super::ImageError;

/// Largest uncompressed rootfs accepted, in bytes.
pub const MAX_ROOTFS: u64 = 8 << 30;

/// Unpacks `input` into `dest` (an empty directory). Returns the bytes written.
pub fn unpack(input: impl Read, dest: &Path) -> Result<u64, ImageError> {
    let mut buf = BufReader::new(input);
    let head = buf.fill_buf().map_err(|e| ImageError::BadArchive(format!("cannot read: {e}")))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::GzDecoder::new(buf)) } else { Box::new(buf) };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut total = 0u64;
    let mut entries_seen = 0usize;
    let entries = archive.entries().map_err(|e| ImageError::BadArchive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::BadArchive(format!("corrupt entry: {e}")))?;
        entries_seen += 1;
        let path = entry.path().map_err(|e| ImageError::BadArchive(e.to_string()))?.into_owned();
        match entry.header().entry_type() {
            EntryType::Char | EntryType::Block | EntryType::Fifo => continue,
            EntryType::Regular
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::GNUSparse
            | EntryType::Continuous => {}
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {
                continue;
            }
            other => {
                return Err(ImageError::BadArchive(format!("{}: unsupported entry type {other:?}", path.display())));
            }
        }
        total = total.saturating_add(entry.header().size().unwrap_or(0));
        if total > MAX_ROOTFS {
            return Err(ImageError::BadArchive(format!("rootfs larger than {} GiB", MAX_ROOTFS >> 30)));
        }
        let inside = entry
            .unpack_in(dest)
            .map_err(|e| ImageError::BadArchive(format!("{}: cannot unpack: {e}", path.display())))?;
        if !inside {
            return Err(ImageError::BadArchive(format!("{}: entry escapes the rootfs", path.display())));
        }
    }
    if entries_seen == 0 {
        return Err(ImageError::BadArchive("the archive is empty (or not a tar archive)".into()));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_entry_type(EntryType::Regular);
            // set_path refuses `..`; write the raw name to craft hostile input.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn plain_and_gzip_tars_unpack() {
        let t = tar_with(&[("bin/hello", b"#!/bin/sh\necho hi\n")]);
        let d = tempfile::tempdir().unwrap();
        assert_eq!(unpack(&t[..], d.path()).unwrap(), 18);
        assert_eq!(std::fs::read(d.path().join("bin/hello")).unwrap(), b"#!/bin/sh\necho hi\n");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &t).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        unpack(&gz.finish().unwrap()[..], d2.path()).unwrap();
        assert!(d2.path().join("bin/hello").exists());
    }

    #[test]
    fn escaping_entries_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("rootfs");
        std::fs::create_dir(&dest).unwrap();
        let t = tar_with(&[("../evil", b"x")]);
        let err = unpack(&t[..], &dest).unwrap_err().to_string();
        assert!(err.contains("escapes the rootfs") || err.contains("cannot unpack"), "{err}");
        assert!(!outer.path().join("evil").exists());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        for junk in [&b""[..], b"not a tar at all", &[0x1f, 0x8b, 0, 1, 2][..]] {
            let err = unpack(junk, d.path()).unwrap_err();
            assert!(matches!(err, ImageError::BadArchive(_)), "{err}");
        }
    }
}
