//! Deletion candidates wait in a temporary file until the source listing has completed, so `--delete`
//! costs disk, not memory, however many target objects are to go.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// An append-only list of keys on disk.
pub struct Spill {
    file: Option<BufWriter<File>>,
    count: u64,
}

impl Spill {
    /// A spill file, created only when `enabled`.
    pub fn new(enabled: bool) -> Result<Self> {
        let file = if enabled {
            Some(BufWriter::new(
                tempfile::tempfile().map_err(|e| Error::local("create", std::env::temp_dir(), e))?,
            ))
        } else {
            None
        };
        Ok(Spill { file, count: 0 })
    }

    /// Appends a key.
    pub fn push(&mut self, key: &str) -> Result<()> {
        let Some(f) = self.file.as_mut() else { return Ok(()) };
        let len = u32::try_from(key.len()).map_err(|_| Error::InvalidArgument("key too long".into()))?;
        f.write_all(&len.to_le_bytes())
            .and_then(|_| f.write_all(key.as_bytes()))
            .map_err(|e| Error::local("write", "deletion list", e))?;
        self.count += 1;
        Ok(())
    }

    /// Reads the keys back, in the order pushed.
    pub fn drain(&mut self) -> Result<impl Iterator<Item = Result<String>>> {
        let io = |e| Error::local("read", "deletion list", e);
        let reader = match self.file.take() {
            Some(w) => {
                let mut f = w.into_inner().map_err(|e| io(e.into_error()))?;
                f.seek(SeekFrom::Start(0)).map_err(io)?;
                Some(BufReader::new(f))
            }
            None => None,
        };
        let mut remaining = self.count;
        let mut reader = reader;
        Ok(std::iter::from_fn(move || {
            if remaining == 0 {
                return None;
            }
            remaining -= 1;
            let r = reader.as_mut()?;
            let mut len = [0u8; 4];
            if let Err(e) = r.read_exact(&mut len) {
                return Some(Err(io(e)));
            }
            let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
            if let Err(e) = r.read_exact(&mut buf) {
                return Some(Err(io(e)));
            }
            Some(String::from_utf8(buf).map_err(|e| io(std::io::Error::other(e))))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_keys() {
        let mut s = Spill::new(true).unwrap();
        for k in ["a", "dir/ü b", ""] {
            s.push(k).unwrap();
        }
        let keys: Vec<String> = s.drain().unwrap().map(|k| k.unwrap()).collect();
        assert_eq!(keys, vec!["a", "dir/ü b", ""]);
    }
}
