//! A structural check of ISO-BMFF files (MP4, MOV): their top-level boxes must tile the file.
//!
//! A file cut short (an interrupted upload or copy) ends inside its last box. When its index
//! (`moov`) comes first, as in every `+faststart` file, FFmpeg opens it and reports the full frame
//! count; the loss only shows when the missing frames are decoded, deep into a job. Walking the box
//! headers (8 or 16 bytes each, a seek between them) finds the cut at once, whatever the file size.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::{Error, Result};

/// More top-level boxes than any real file has (they hold a handful); bounds the walk.
const MAX_TOP_LEVEL_BOXES: usize = 100_000;

/// Refuses an ISO-BMFF file whose top-level boxes do not fit in it (truncated) or are malformed.
pub(crate) fn check_top_level_boxes(path: &Path) -> Result<()> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut offset = 0u64;
    for _ in 0..MAX_TOP_LEVEL_BOXES {
        // Fewer bytes than a box header: trailing padding some writers leave, not a box.
        if len - offset < 8 {
            return Ok(());
        }
        let mut header = [0u8; 8];
        file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_exact(&mut header)).map_err(|e| Error::io(path, e))?;
        let kind = box_name(&header[4..8]);
        let size = match u32::from_be_bytes([header[0], header[1], header[2], header[3]]) {
            // Size 0: the box runs to the end of the file (allowed for the last box only, which
            // it is by definition).
            0 => return Ok(()),
            1 => {
                let mut large = [0u8; 8];
                if len - offset < 16 {
                    return Err(truncated(&kind, 16, len - offset));
                }
                file.read_exact(&mut large).map_err(|e| Error::io(path, e))?;
                let size = u64::from_be_bytes(large);
                if size < 16 {
                    return Err(Error::Media(format!("the MP4 is corrupt: box {kind:?} declares {size} bytes, less than its header")));
                }
                size
            }
            n if n < 8 => {
                return Err(Error::Media(format!("the MP4 is corrupt: box {kind:?} declares {n} bytes, less than its header")));
            }
            n => u64::from(n),
        };
        if size > len - offset {
            return Err(truncated(&kind, size, len - offset));
        }
        offset += size;
        if offset == len {
            return Ok(());
        }
    }
    Err(Error::Media(format!("the MP4 is corrupt: more than {MAX_TOP_LEVEL_BOXES} top-level boxes")))
}

fn truncated(kind: &str, needs: u64, remain: u64) -> Error {
    Error::Media(format!(
        "the MP4 is truncated: its {kind:?} box needs {needs} bytes but only {remain} remain in the file"
    ))
}

/// A box type as text (four bytes, non-printable ones escaped).
fn box_name(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| if b.is_ascii_graphic() { char::from(b).to_string() } else { format!("\\x{b:02x}") }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    fn check(bytes: &[u8]) -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Media(e.to_string()))?;
        let path = dir.path().join("f.mp4");
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        check_top_level_boxes(&path)
    }

    #[test]
    fn whole_files_pass_and_cut_ones_name_the_box() {
        let mut file = boxed(b"ftyp", b"isom\0\0\0\0");
        file.extend(boxed(b"moov", &[7; 100]));
        file.extend(boxed(b"mdat", &[1; 1000]));
        assert!(check(&file).is_ok());
        let err = check(&file[..file.len() - 10]).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("mdat") && err.contains("1008"), "{err}");
        // Size 0 runs to the end; a 64-bit size is honoured; a few trailing bytes are padding.
        let mut open_ended = boxed(b"ftyp", b"isom");
        open_ended.extend_from_slice(&[0, 0, 0, 0, b'm', b'd', b'a', b't', 9, 9, 9]);
        assert!(check(&open_ended).is_ok());
        let mut large = boxed(b"ftyp", b"isom");
        large.extend_from_slice(&[0, 0, 0, 1, b'm', b'd', b'a', b't']);
        large.extend_from_slice(&20u64.to_be_bytes());
        large.extend_from_slice(&[5; 4]);
        assert!(check(&large).is_ok());
        large.push(0);
        assert!(check(&large).is_ok(), "one trailing byte is not a box");
        let mut bad = boxed(b"ftyp", b"isom");
        bad.extend_from_slice(&[0, 0, 0, 3, b'f', b'r', b'e', b'e']);
        assert!(check(&bad).unwrap_err().to_string().contains("corrupt"));
    }
}
