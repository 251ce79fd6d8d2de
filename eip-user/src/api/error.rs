//! Every error answer is `{"error": "one sentence"}`, with its status: malformed requests
//! (bodies and query strings included) 400, unknown targets 404, refusals 409, failures 500.

use axum::{
    Json,
    extract::{FromRequest, Query, Request, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::ApiError;
use crate::{engine::EngineError, error_chain, lifecycle::Refusal};

/// An error answer.
pub struct Failure(pub(super) StatusCode, pub(super) String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Refused(r) => r.into(),
            other => Failure(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&other)),
        }
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        let code = match r {
            Refusal::UnknownTarget(_) => StatusCode::NOT_FOUND,
            Refusal::BadTarget(_) | Refusal::BadName(_) | Refusal::Rate(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::CONFLICT,
        };
        Failure(code, r.to_string())
    }
}

/// Query strings whose rejection is our JSON error, not axum's plain text.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Failure> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Q(v)),
            Err(rej) => Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("malformed query: {}", rej.body_text()),
            )),
        }
    }
}

/// JSON bodies whose rejection is our one-sentence error, not axum's plain text.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Failure;
    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            // 413 for a body over the limit; every other rejection is a malformed request.
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large".into(),
            )),
            Err(rej) => Err(Failure(StatusCode::BAD_REQUEST, rejection(&rej))),
        }
    }
}

fn rejection(rej: &JsonRejection) -> String {
    format!("malformed request: {}", error_chain(rej))
}
