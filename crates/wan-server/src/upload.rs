//! Multipart uploads streamed to disk: never held in memory, cut off at a size limit (413), and
//! typed from their first bytes (415 when they are no accepted image/video), never from the
//! client's Content-Type or file name. Stored under a server-chosen name (`uploads/up_<hex>.<ext>`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use actix_multipart::Multipart;
use futures_util::StreamExt;
use rand::Rng;
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;
use crate::media_check::{self, MediaCheckError};

/// What an upload turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
        }
    }
}

/// Bytes needed to recognise every accepted type.
const SNIFF_BYTES: usize = 4096;
/// A text field longer than this is refused (prompts are far shorter).
const MAX_TEXT_FIELD: usize = 64 * 1024;
const MAX_FIELDS: usize = 64;

/// Accepted types by their bytes: (mime, extension, kind).
pub fn sniff(head: &[u8]) -> Option<(&'static str, &'static str, MediaKind)> {
    let t = infer::get(head)?;
    let (ext, kind) = match t.mime_type() {
        "image/png" => ("png", MediaKind::Image),
        "image/jpeg" => ("jpg", MediaKind::Image),
        "image/webp" => ("webp", MediaKind::Image),
        "video/mp4" => ("mp4", MediaKind::Video),
        "video/quicktime" => ("mov", MediaKind::Video),
        "video/x-msvideo" => ("avi", MediaKind::Video),
        "video/webm" => ("webm", MediaKind::Video),
        "video/x-matroska" => ("mkv", MediaKind::Video),
        _ => return None,
    };
    Some((t.mime_type(), ext, kind))
}

/// Size limits of uploads, per kind.
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    pub max_image_bytes: u64,
    pub max_video_bytes: u64,
}

impl UploadLimits {
    fn max_for(&self, kind: MediaKind) -> u64 {
        match kind {
            MediaKind::Image => self.max_image_bytes,
            MediaKind::Video => self.max_video_bytes,
        }
    }
}

/// A file stored from an upload.
#[derive(Clone, Debug)]
pub struct StoredUpload {
    pub path: PathBuf,
    /// `uploads/<file name>`: how a later request names it (`image_key` / `video_key`).
    pub key: String,
    pub content_type: &'static str,
    pub kind: MediaKind,
    pub size: u64,
}

/// The text fields of a form and the one file it carried.
#[derive(Debug, Default)]
pub struct Form {
    pub fields: HashMap<String, String>,
    pub file: Option<StoredUpload>,
}

/// Reads a multipart form: text fields into memory (bounded), the field `file_field` to a file in
/// `dir`. `accept` lists the kinds the route takes; anything else is a 415.
pub async fn read_form(mut payload: Multipart, file_field: &str, accept: &[MediaKind], limits: UploadLimits, dir: &Path) -> Result<Form, ApiError> {
    let mut form = Form::default();
    let mut count = 0usize;
    while let Some(item) = payload.next().await {
        let mut field = item.map_err(multipart_error)?;
        count += 1;
        if count > MAX_FIELDS {
            return cleanup(form, ApiError::bad_request("invalid_form", format!("too many form fields (limit {MAX_FIELDS})"))).await;
        }
        let name = field.name().unwrap_or_default().to_string();
        if name == file_field {
            if form.file.is_some() {
                return cleanup(form, ApiError::bad_request("invalid_form", format!("the field {file_field} was sent twice"))).await;
            }
            match store_file(&mut field, accept, limits, dir).await {
                Ok(stored) => form.file = Some(stored),
                Err(e) => return cleanup(form, e).await,
            }
        } else {
            let mut value = Vec::new();
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(multipart_error)?;
                if value.len() + chunk.len() > MAX_TEXT_FIELD {
                    return cleanup(form, ApiError::PayloadTooLarge(format!("form field {name} is over {MAX_TEXT_FIELD} bytes"))).await;
                }
                value.extend_from_slice(&chunk);
            }
            let Ok(text) = String::from_utf8(value) else {
                return cleanup(form, ApiError::bad_request("invalid_form", format!("form field {name} is not UTF-8 text"))).await;
            };
            form.fields.insert(name, text);
        }
    }
    Ok(form)
}

async fn cleanup(form: Form, e: ApiError) -> Result<Form, ApiError> {
    if let Some(f) = form.file {
        let _ = tokio::fs::remove_file(&f.path).await;
    }
    Err(e)
}

fn multipart_error(e: actix_multipart::MultipartError) -> ApiError {
    ApiError::bad_request("invalid_form", format!("Invalid multipart/form-data body: {e}"))
}

fn random_name() -> String {
    let mut rng = rand::rng();
    (0..24).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect()
}

/// Streams one field to `dir`, sniffing its type from the first bytes and enforcing the limit of
/// that type; the temporary file is removed on any failure.
async fn store_file(field: &mut actix_multipart::Field, accept: &[MediaKind], limits: UploadLimits, dir: &Path) -> Result<StoredUpload, ApiError> {
    tokio::fs::create_dir_all(dir).await.map_err(ApiError::internal)?;
    let id = random_name();
    let tmp = dir.join(format!(".tmp-{id}"));
    let mut result = write_field(field, accept, limits, &tmp).await;
    if let Ok((_, _, kind, _)) = result {
        if let Err(e) = check_media(&tmp, kind, limits.max_for(kind)).await {
            result = Err(e);
        }
    }
    match result {
        Ok((mime, ext, kind, size)) => {
            let name = format!("up_{id}.{ext}");
            let path = dir.join(&name);
            if let Err(e) = tokio::fs::rename(&tmp, &path).await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(ApiError::internal(e));
            }
            Ok(StoredUpload { path, key: format!("uploads/{name}"), content_type: mime, kind, size })
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

/// The media check of [`crate::media_check`] on a blocking thread: 400 `invalid_media` for a
/// file that is not usable media.
async fn check_media(path: &Path, kind: MediaKind, max_bytes: u64) -> Result<(), ApiError> {
    let path = path.to_path_buf();
    let limits = media_check::upload_limits(max_bytes);
    match tokio::task::spawn_blocking(move || media_check::check_upload(&path, kind, &limits)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ MediaCheckError::Invalid { .. })) => Err(ApiError::bad_request("invalid_media", e.to_string())),
        Ok(Err(e @ MediaCheckError::Io(_))) => Err(ApiError::internal(e)),
        Err(e) => Err(ApiError::internal(format!("the media check stopped: {e}"))),
    }
}

async fn write_field(
    field: &mut actix_multipart::Field,
    accept: &[MediaKind],
    limits: UploadLimits,
    tmp: &Path,
) -> Result<(&'static str, &'static str, MediaKind, u64), ApiError> {
    let mut file = tokio::fs::File::create(tmp).await.map_err(ApiError::internal)?;
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    let mut typed: Option<(&'static str, &'static str, MediaKind)> = None;
    let mut size: u64 = 0;
    let accepted = |head: &[u8]| -> Result<(&'static str, &'static str, MediaKind), ApiError> {
        match sniff(head) {
            Some(t) if accept.contains(&t.2) => Ok(t),
            _ => Err(ApiError::UnsupportedMediaType(format!(
                "the uploaded file is not an accepted {} (judged from its content; accepted: {})",
                accept.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" or "),
                accepted_list(accept)
            ))),
        }
    };
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(multipart_error)?;
        size += chunk.len() as u64;
        if typed.is_none() {
            head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
            if head.len() >= SNIFF_BYTES {
                typed = Some(accepted(&head)?);
            }
        }
        let max = typed.map(|t| limits.max_for(t.2)).unwrap_or(limits.max_image_bytes.max(limits.max_video_bytes));
        if size > max {
            return Err(ApiError::PayloadTooLarge(format!("the upload is over the limit of {max} bytes")));
        }
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    let t = match typed {
        Some(t) => t,
        None if head.is_empty() => return Err(ApiError::bad_request("invalid_form", "the uploaded file is empty")),
        None => accepted(&head)?,
    };
    if size > limits.max_for(t.2) {
        return Err(ApiError::PayloadTooLarge(format!("the upload is over the limit of {} bytes", limits.max_for(t.2))));
    }
    file.flush().await.map_err(ApiError::internal)?;
    Ok((t.0, t.1, t.2, size))
}

fn accepted_list(accept: &[MediaKind]) -> &'static str {
    match accept {
        [MediaKind::Image] => "PNG, JPEG, WebP",
        [MediaKind::Video] => "MP4, MOV, AVI, WebM, MKV",
        _ => "PNG, JPEG, WebP, MP4, MOV, AVI, WebM, MKV",
    }
}

/// The stored upload a key (`uploads/up_<hex>.<ext>`) names, if it is one and exists as a
/// regular file (not a symlink).
pub fn resolve_key(key: &str, uploads_dir: &Path) -> Option<(PathBuf, MediaKind)> {
    let name = key.strip_prefix("uploads/")?;
    let (stem, ext) = name.split_once('.')?;
    let hex = stem.strip_prefix("up_")?;
    if hex.len() != 24 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let kind = match ext {
        "png" | "jpg" | "webp" => MediaKind::Image,
        "mp4" | "mov" | "avi" | "webm" | "mkv" => MediaKind::Video,
        _ => return None,
    };
    let path = uploads_dir.join(name);
    // A regular file only: a symlink planted in uploads/ must not lead out of it.
    let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
    regular.then_some((path, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_ignores_names_and_refuses_text() {
        let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R'];
        assert_eq!(sniff(&png).map(|t| t.2), Some(MediaKind::Image));
        assert_eq!(sniff(b"hello, this is text pretending to be an mp4"), None);
    }

    #[test]
    fn keys_must_be_server_names() {
        let dir = std::env::temp_dir();
        for bad in ["uploads/../etc/passwd", "uploads/up_zz.png", "/etc/passwd", "uploads/up_0123456789abcdef01234567.sh"] {
            assert!(resolve_key(bad, &dir).is_none(), "{bad}");
        }
    }
}
