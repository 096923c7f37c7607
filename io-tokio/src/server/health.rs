//! `/health`: each registered check runs (concurrently, each under a timeout); 200
//! with `"status": "healthy"` when all pass, else 503 with `"unhealthy"`, and the
//! outcome of each check by name.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The future a [`HealthCheck`] returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One dependency `/health` asks about, such as PostgreSQL (`SELECT 1`) or Redis
/// (`PING`). `Err` carries why it is unhealthy (never a secret: it is shown to
/// whoever asks `/health`).
pub trait HealthCheck: Send + Sync + 'static {
    /// The key in the response's `checks` object (`"database"`, `"redis"`).
    fn name(&self) -> &str;
    /// Asks the dependency whether it answers.
    fn check(&self) -> CheckFuture<'_>;
}

/// A check from a name and an async closure, for checks without a type of their own.
pub fn check_fn<F, Fut>(name: impl Into<String>, f: F) -> impl HealthCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    struct FnCheck<F>(String, F);
    impl<F, Fut> HealthCheck for FnCheck<F>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        fn name(&self) -> &str {
            &self.0
        }
        fn check(&self) -> CheckFuture<'_> {
            Box::pin((self.1)())
        }
    }
    FnCheck(name.into(), f)
}

/// The registered checks, and how long each may take.
#[derive(Clone)]
pub(crate) struct HealthChecks {
    pub(crate) checks: Vec<Arc<dyn HealthCheck>>,
    pub(crate) timeout: Duration,
}

/// What `/health` answers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthReport {
    /// `"healthy"` or `"unhealthy"`.
    pub status: String,
    /// Each check by name: `"healthy"` or `"unhealthy: why"`.
    pub checks: std::collections::BTreeMap<String, String>,
}

impl HealthReport {
    /// Whether every check passed.
    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }
}

impl HealthChecks {
    pub(crate) async fn run(&self, shutting_down: bool) -> HealthReport {
        let mut set = tokio::task::JoinSet::new();
        for check in &self.checks {
            let check = check.clone();
            let timeout = self.timeout;
            set.spawn(async move {
                let outcome = match tokio::time::timeout(timeout, check.check()).await {
                    Ok(Ok(())) => "healthy".to_string(),
                    Ok(Err(why)) => format!("unhealthy: {why}"),
                    Err(_) => format!("unhealthy: no answer within {} ms", timeout.as_millis()),
                };
                (check.name().to_string(), outcome)
            });
        }
        let mut checks = std::collections::BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((name, outcome)) => {
                    checks.insert(name, outcome);
                }
                Err(e) => {
                    checks.insert(
                        "check".to_string(),
                        format!("unhealthy: a check panicked ({e})"),
                    );
                }
            }
        }
        if shutting_down {
            checks.insert(
                "runtime".to_string(),
                "unhealthy: shutting down".to_string(),
            );
        }
        let healthy = checks.values().all(|v| v == "healthy");
        HealthReport {
            status: if healthy { "healthy" } else { "unhealthy" }.to_string(),
            checks,
        }
    }
}

impl IntoResponse for HealthReport {
    fn into_response(self) -> Response {
        let status = if self.is_healthy() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(self)).into_response()
    }
}
