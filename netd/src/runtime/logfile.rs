//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log": "...\n", "stream": "stdout", "time": "RFC3339Nano"}`, in
//! `container.log`, rotated to `container.log.1`.. when it passes a size bound.
//! The shim writes them (also while netd is down); netd reads them for the
//! logs and attach endpoints.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default size bound of one log file.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
/// Default number of files kept (the live one included).
pub const DEFAULT_MAX_FILES: u32 = 3;
/// Longest line written as one entry; longer output is split (as Docker does at 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Appends entries, rotating by size.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    size: u64,
    partial: [Vec<u8>; 2],
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

impl Writer {
    /// Opens (appending) the log at `path`.
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> std::io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_owned(),
            max_bytes: max_bytes.max(4096),
            max_files: max_files.max(1),
            file,
            size,
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.max_files > 1 {
            for n in (1..self.max_files - 1).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    fn emit(&mut self, stream: &str, line: &[u8]) -> std::io::Result<()> {
        let entry = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: stream.to_owned(),
            time: jiff::Timestamp::now().to_string(),
        };
        let mut bytes = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Writes output of `stream` (0 = stdout, 1 = stderr): complete lines
    /// become entries, a partial line waits for more (or [`Writer::flush_partial`]).
    pub fn write(&mut self, stream: usize, data: &[u8]) -> std::io::Result<()> {
        let name = if stream == 0 { "stdout" } else { "stderr" };
        let mut buf = std::mem::take(&mut self.partial[stream]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + i + 1;
            for chunk in buf[start..end].chunks(MAX_LINE) {
                self.emit(name, chunk)?;
            }
            start = end;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.emit(name, &rest)?;
            rest = tail;
        }
        self.partial[stream] = rest;
        Ok(())
    }

    /// Writes out partial lines (at the end of the output).
    pub fn flush_partial(&mut self) -> std::io::Result<()> {
        for s in 0..2 {
            let rest = std::mem::take(&mut self.partial[s]);
            if !rest.is_empty() {
                self.emit(if s == 0 { "stdout" } else { "stderr" }, &rest)?;
            }
        }
        self.file.flush()
    }
}

/// Reads every entry of the log at `path`, oldest first (rotated files too).
/// Lines that are not valid entries (a torn last write) are skipped.
pub fn read_all(path: &Path, max_files: u32) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = (1..max_files.max(1)).rev().map(|n| rotated(path, n)).collect();
    files.push(path.to_owned());
    for f in files {
        let Ok(file) = File::open(&f) else { continue };
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                out.push(e);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_partials_and_streams() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.log");
        let mut w = Writer::open(&p, DEFAULT_MAX_BYTES, 3).unwrap();
        w.write(0, b"hel").unwrap();
        w.write(1, b"oops\n").unwrap();
        w.write(0, b"lo\nworld").unwrap();
        w.flush_partial().unwrap();
        let e = read_all(&p, 3);
        let got: Vec<(&str, &str)> = e.iter().map(|e| (e.stream.as_str(), e.log.as_str())).collect();
        assert_eq!(got, [("stderr", "oops\n"), ("stdout", "hello\n"), ("stdout", "world")]);
        assert!(e[0].time.parse::<jiff::Timestamp>().is_ok());
    }

    #[test]
    fn rotation_bounds_the_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.log");
        let mut w = Writer::open(&p, 4096, 3).unwrap();
        for i in 0..1000 {
            w.write(0, format!("line {i:04}\n").as_bytes()).unwrap();
        }
        w.flush_partial().unwrap();
        let total: u64 = std::fs::read_dir(d.path()).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
        assert!(total <= 3 * 4096 + 200, "bounded: {total}");
        assert!(!d.path().join("c.log.3").exists(), "at most 3 files");
        let e = read_all(&p, 3);
        assert_eq!(e.last().unwrap().log, "line 0999\n");
        let nums: Vec<u32> = e.iter().map(|e| e.log[5..9].parse().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "oldest first, no gaps within what is kept");
    }

    #[test]
    fn long_lines_split_and_garbage_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.log");
        let mut w = Writer::open(&p, DEFAULT_MAX_BYTES, 1).unwrap();
        w.write(0, &vec![b'x'; MAX_LINE * 2 + 10]).unwrap();
        w.write(0, b"\n").unwrap();
        drop(w);
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"{\"log\":\"torn").unwrap();
        let e = read_all(&p, 1);
        assert_eq!(e.len(), 3);
        assert_eq!(e.iter().map(|e| e.log.len()).sum::<usize>(), MAX_LINE * 2 + 11);
    }
}
