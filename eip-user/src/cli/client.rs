//! The CLI's side of the socket: one HTTP/1.1 request per command.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use crate::api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the eip daemon is not running (nothing listens on {0})")]
    NotRunning(PathBuf),
    #[error("permission denied on {0} (run as root, or as a member of the daemon's --socket-group)")]
    Permission(PathBuf),
    #[error("cannot reach the daemon on {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon on {path} did not answer within {} s (EIP_TIMEOUT sets the limit in seconds)", .after.as_secs())]
    Timeout {
        path: PathBuf,
        after: std::time::Duration,
    },
    #[error("the daemon hung up: {0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Refused(String),
    #[error("the daemon answered {status} with something that is not its JSON: {body}")]
    Garbled { status: StatusCode, body: String },
}

pub struct Client {
    socket: PathBuf,
    timeout: std::time::Duration,
}

impl Client {
    /// How long a command waits for the daemon by default: connecting and the whole answer.
    pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_owned(),
            timeout: Self::TIMEOUT,
        }
    }

    /// As [`Client::new`], with the limit from `EIP_TIMEOUT` (seconds) when it is set.
    pub fn from_env(socket: &Path) -> Self {
        let mut c = Self::new(socket);
        if let Some(secs) = std::env::var("EIP_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
        {
            c.timeout = std::time::Duration::from_secs_f64(secs.min(86_400.0));
        }
        c
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        // A daemon stopped (SIGSTOP), wedged or flooded must not hang a script.
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    path: self.socket.clone(),
                    after: self.timeout,
                })
            })
    }

    async fn exchange<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.socket.clone())
                }
                std::io::ErrorKind::PermissionDenied => ClientError::Permission(self.socket.clone()),
                _ => ClientError::Connect {
                    path: self.socket.clone(),
                    source: e,
                },
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Refused(e.to_string()))?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "eip")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Refused(e.to_string()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|_| ClientError::Garbled {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        } else {
            match serde_json::from_slice::<ApiError>(&body) {
                Ok(e) => Err(ClientError::Refused(e.error)),
                Err(_) => Err(ClientError::Garbled {
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                }),
            }
        }
    }
}
