//! What every answer shares: digests, the OCI error envelope, percent decoding.

use super::*;

pub(super) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The digest of `parts` (concatenated) in the algorithm `like` names (sha256 or sha512).
pub(super) fn compute_digest(like: &str, parts: &[&[u8]]) -> Option<String> {
    fn hash<D: sha2::Digest>(parts: &[&[u8]]) -> String {
        let mut d = D::new();
        for p in parts {
            d.update(p);
        }
        hex::encode(d.finalize())
    }
    match like.split_once(':')?.0 {
        "sha256" => Some(format!("sha256:{}", hash::<Sha256>(parts))),
        "sha512" => Some(format!("sha512:{}", hash::<Sha512>(parts))),
        _ => None,
    }
}

/// `None` for a well-formed sha256 or sha512 digest, else the 400 DIGEST_INVALID to send.
pub(super) fn digest_error(digest: &str) -> Option<Response> {
    let lower_hex = |h: &str| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let ok = match digest.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64 && lower_hex(hex),
        Some(("sha512", hex)) => hex.len() == 128 && lower_hex(hex),
        _ => false,
    };
    if ok {
        None
    } else {
        Some(error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "invalid or unsupported digest",
            json!({"digest": digest}),
        ))
    }
}

pub(super) fn error_body(code: &str, message: &str, detail: Value) -> String {
    let mut e = json!({"code": code, "message": message});
    if !detail.is_null() {
        e["detail"] = detail;
    }
    json!({ "errors": [e] }).to_string()
}

pub(super) fn error(status: StatusCode, code: &str, message: &str, detail: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error_body(code, message, detail),
    )
        .into_response()
}

/// What a router without the route answers (and what distribution sends for unknown paths).
pub(super) fn not_found_page() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
