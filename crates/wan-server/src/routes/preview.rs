//! `GET /api/v1/preview/{filename}?width=`: a JPEG of an output's first frame, scaled to `width`
//! (32..=1920, default 320) keeping the aspect ratio.

use std::io::Cursor;
use std::path::Path;

use actix_web::{get, web, HttpResponse};
use image::{ImageReader, Limits};
use serde::Deserialize;

use crate::error::ApiError;
use crate::routes::outputs::{file_type_of, output_file};
use crate::state::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// 32..=1920, default 320.
    pub width: Option<u32>,
}

/// Decodes an image (dimensions checked from the header first) and scales it.
fn image_preview(path: &Path, width: u32) -> Result<Vec<u8>, String> {
    let mut reader = ImageReader::open(path).map_err(|e| e.to_string())?.with_guessed_format().map_err(|e| e.to_string())?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(16384);
    limits.max_image_height = Some(16384);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| e.to_string())?;
    encode_scaled(img, width)
}

fn encode_scaled(img: image::DynamicImage, width: u32) -> Result<Vec<u8>, String> {
    let height = ((img.height() as u64 * width as u64) / img.width().max(1) as u64).max(1) as u32;
    let scaled = img.resize_exact(width, height, image::imageops::FilterType::Triangle).to_rgb8();
    let mut out = Cursor::new(Vec::new());
    scaled.write_to(&mut out, image::ImageFormat::Jpeg).map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// The first frame of a video, scaled to `width`, as JPEG (decoded in process with ffmpeg-next).
async fn video_preview(path: &Path, width: u32) -> Result<Vec<u8>, String> {
    let path = path.to_path_buf();
    web::block(move || wan_pipeline::media::first_frame_jpeg(&path, width).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())?
}

#[utoipa::path(get, path = "/api/v1/preview/{filename}", tag = "outputs", params(("filename" = String, Path), PreviewQuery),
    responses((status = 200, content_type = "image/jpeg", description = "JPEG thumbnail"), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
#[get("/api/v1/preview/{filename}")]
pub async fn preview(state: web::Data<AppState>, filename: web::Path<String>, q: web::Query<PreviewQuery>) -> Result<HttpResponse, ApiError> {
    let width = q.width.unwrap_or(320);
    if !(32..=1920).contains(&width) {
        return Err(ApiError::bad_request("invalid_query", format!("Invalid query: width must be 32..=1920, got {width}")));
    }
    let path = output_file(&state.config.outputs_dir(), &filename)?;
    let jpeg = match file_type_of(&filename) {
        Some("image") => web::block(move || image_preview(&path, width)).await.map_err(ApiError::internal)?,
        Some(_) => video_preview(&path, width).await,
        None => return Err(ApiError::UnsupportedMediaType(format!("{:?} is not an image or video", filename.as_str()))),
    }
    .map_err(|e| ApiError::UnsupportedMediaType(format!("cannot make a preview of {:?}: {e}", filename.as_str())))?;
    Ok(HttpResponse::Ok().content_type("image/jpeg").insert_header(("Cache-Control", "max-age=60")).body(jpeg))
}
