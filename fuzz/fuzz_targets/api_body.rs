#![no_main]
//! The JSON bodies of `POST /v1/sign` and `POST /v1/revoke`, through the same extractor the
//! handlers use (`ApiJson`), with the content type chosen by the first byte. Every input
//! must become a value or an `ApiError` (400/413/415), never a panic.
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::FromRequest;
use canopy_issuer::api::{ApiJson, RevokeBody, SignBody};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/vnd.api+json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[(selector & 3) as usize];
    let request = || {
        axum::http::Request::builder()
            .method("POST")
            .header("content-type", content_type)
            .body(Body::from(body.to_vec()))
            .expect("request")
    };
    runtime().block_on(async {
        if selector & 4 == 0 {
            if let Ok(ApiJson(b)) = ApiJson::<SignBody>::from_request(request(), &()).await {
                let _ = format!("{b:?}");
            }
        } else if let Ok(ApiJson(b)) = ApiJson::<RevokeBody>::from_request(request(), &()).await {
            let _ = format!("{b:?}");
        }
    });
});
