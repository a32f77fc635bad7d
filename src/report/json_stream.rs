//! JSON written as it is made: an object whose one long array is streamed element by element
//! ([`JsonStream`]), so a report of 100,000 items, or `ferry plan --output json` of as many,
//! never is a string in memory; and the file it goes to ([`PrivateFile`]), 0600, renamed into
//! place only when it is whole. The text is what `serde_json`'s pretty printer writes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// An object being written: the fields of a head, one array element by element, then the
/// fields of a tail.
pub struct JsonStream<W: Write> {
    out: W,
    elements: usize,
}

/// `value` as `serde_json`'s pretty printer writes it.
fn pretty(value: &impl Serialize) -> io::Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(value)?)
}

impl<W: Write> JsonStream<W> {
    /// Open the object with the fields of `head` (a struct; none when it has none), then
    /// open the array `name`.
    pub fn begin(mut out: W, head: &impl Serialize, name: &str) -> io::Result<JsonStream<W>> {
        let head = pretty(head)?;
        match head.strip_suffix(b"\n}") {
            Some(fields) => {
                out.write_all(fields)?;
                out.write_all(b",\n  ")?;
            }
            None => out.write_all(b"{\n  ")?,
        }
        serde_json::to_writer(&mut out, name)?;
        out.write_all(b": [")?;
        Ok(JsonStream { out, elements: 0 })
    }

    /// One more element of the array.
    pub fn element(&mut self, element: &impl Serialize) -> io::Result<()> {
        let separator: &[u8] = match self.elements {
            0 => b"\n    ",
            _ => b",\n    ",
        };
        self.out.write_all(separator)?;
        // Two levels in. Every raw newline of pretty JSON is layout: strings escape theirs.
        let body = pretty(element)?;
        for (n, line) in body.split(|b| *b == b'\n').enumerate() {
            if n > 0 {
                self.out.write_all(b"\n    ")?;
            }
            self.out.write_all(line)?;
        }
        self.elements += 1;
        Ok(())
    }

    /// How many elements the array has so far.
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// Close the array, write the fields of `tail` (a struct), close the object (and the
    /// line); the writer back.
    pub fn end(mut self, tail: &impl Serialize) -> io::Result<W> {
        let close: &[u8] = match self.elements {
            0 => b"]",
            _ => b"\n  ]",
        };
        self.out.write_all(close)?;
        let tail = pretty(tail)?;
        match tail.strip_prefix(b"{\n") {
            Some(fields) => {
                self.out.write_all(b",\n")?;
                self.out.write_all(fields)?;
            }
            None => self.out.write_all(b"\n}")?,
        }
        self.out.write_all(b"\n")?;
        Ok(self.out)
    }
}

/// A temporary file no name leads to (0600 in the temporary directory, unlinked once open):
/// output spooled to disk while the run goes, to be printed once it is over.
pub fn spool() -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!(".ferry-{}-{nanos}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Print what was spooled (`spooled`: its writer, flushed here) to `out`.
pub fn unspool(spooled: BufWriter<File>, out: &mut impl Write) -> io::Result<()> {
    use std::io::Seek;
    let mut file = spooled
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    file.rewind()?;
    io::copy(&mut file, out)?;
    Ok(())
}

/// A file written through a 0600 temporary sibling (`.NAME.PID.tmp`, buffered) and renamed
/// into place by [`PrivateFile::keep`]: readers see the old file or the whole new one.
/// Dropped before that, the temporary file is removed.
pub struct PrivateFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl PrivateFile {
    pub fn create(path: &Path) -> io::Result<PrivateFile> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "report".into());
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(PrivateFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(BufWriter::new(file)),
        })
    }

    /// Where it is being written until it is kept.
    pub fn temporary(&self) -> &Path {
        &self.tmp
    }

    /// Flush it to disk and rename it into place.
    pub fn keep(mut self) -> io::Result<()> {
        let file = self.file.take().expect("kept once");
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)
    }

    fn file(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("not kept yet")
    }
}

impl Write for PrivateFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize)]
    struct Empty {}

    /// What is streamed reads back as the object serde_json would have written whole, in the
    /// same layout.
    #[test]
    fn a_streamed_object_is_the_pretty_json_of_the_whole() {
        // Keys in the order a whole map has them (sorted), to compare the text.
        let head = json!({"a": 1, "b": "two\nlines"});
        let tail = json!({"z": [1, 2], "y": {"k": null}});
        let elements = [
            json!({"n": 1, "list": ["x", "y"]}),
            json!("plain"),
            json!([]),
        ];
        let mut stream = JsonStream::begin(Vec::new(), &head, "items").unwrap();
        for e in &elements {
            stream.element(e).unwrap();
        }
        let text = String::from_utf8(stream.end(&tail).unwrap()).unwrap();
        let whole =
            json!({"a": 1, "b": "two\nlines", "items": elements, "y": {"k": null}, "z": [1, 2]});
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            whole
        );
        let mut expected = serde_json::to_string_pretty(&whole).unwrap();
        expected.push('\n');
        assert_eq!(text, expected);
        // No head, no element, no tail.
        let empty = JsonStream::begin(Vec::new(), &Empty {}, "copies").unwrap();
        let text = String::from_utf8(empty.end(&Empty {}).unwrap()).unwrap();
        assert_eq!(text, "{\n  \"copies\": []\n}\n");
    }

    /// Written, the file is only the temporary one; kept, it is in place, 0600; dropped
    /// before, nothing is left.
    #[test]
    fn a_private_file_appears_whole_or_not_at_all() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out").join("report.json");
        let mut f = PrivateFile::create(&path).unwrap();
        f.write_all(&[b'x'; 100_000]).unwrap();
        let tmp = f.temporary().to_path_buf();
        // Buffered, yet most of it is on disk already: it is written as it comes.
        assert!(std::fs::metadata(&tmp).unwrap().len() >= 90_000);
        assert!(!path.exists());
        f.keep().unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 100_000);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!tmp.exists());
        let f = PrivateFile::create(&path).unwrap();
        let tmp = f.temporary().to_path_buf();
        drop(f);
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&path).unwrap().len(), 100_000);
    }
}
