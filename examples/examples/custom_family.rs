//! Adding your own effect family without forking effectful.
//!
//! A `Payments` family with one effect, `ChargeCard`, lives beside the built-in
//! families in an application family `App`. Programs written against `Fx<App>` use
//! both; drivers answer both.
//!
//! Run: `cargo run -p effectful-examples --example custom_family`

use effectful::effect::{self, GetUserById, User, UserLookup};
use effectful::{Effect, EffectError, EmbedStd, EngineConfig, Family, Fx, run_async};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The new effect: charge a card. Output: [`Charge`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ChargeCard {
    user_id: Uuid,
    cents: u64,
}

/// Its domain outcome: declined is a value, not an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Charge {
    Approved { receipt: String },
    Declined { reason: String },
}

/// The application's requests: every built-in one, plus ours.
#[derive(Debug, Serialize, Deserialize)]
enum AppRequest {
    Std(effect::Request),
    ChargeCard(ChargeCard),
}

/// The application's responses.
#[derive(Debug, Serialize, Deserialize)]
enum AppResponse {
    Std(effect::Response),
    ChargeCard(Charge),
}

/// The family marker.
struct App;

impl Family for App {
    type Request = AppRequest;
    type Response = AppResponse;
    fn request_name(request: &AppRequest) -> &'static str {
        match request {
            AppRequest::Std(r) => r.name(),
            AppRequest::ChargeCard(_) => "Payments.ChargeCard",
        }
    }
    fn response_name(response: &AppResponse) -> &'static str {
        match response {
            AppResponse::Std(r) => r.name(),
            AppResponse::ChargeCard(_) => "Payments.ChargeCard",
        }
    }
}

/// Makes every built-in effect an effect of `App` too.
impl EmbedStd for App {
    fn embed_request(request: effect::Request) -> AppRequest {
        AppRequest::Std(request)
    }
    fn embed_response(response: effect::Response) -> AppResponse {
        AppResponse::Std(response)
    }
    fn project_response(response: AppResponse) -> Result<effect::Response, AppResponse> {
        match response {
            AppResponse::Std(r) => Ok(r),
            other => Err(other),
        }
    }
}

impl Effect<App> for ChargeCard {
    type Output = Charge;
    const NAME: &'static str = "Payments.ChargeCard";
    fn into_request(self) -> AppRequest {
        AppRequest::ChargeCard(self)
    }
    fn from_response(response: AppResponse) -> Result<Charge, AppResponse> {
        match response {
            AppResponse::ChargeCard(charge) => Ok(charge),
            other => Err(other),
        }
    }
}

/// A program using a built-in effect and ours.
async fn checkout(fx: Fx<App>, user_id: Uuid, cents: u64) -> Result<String, EffectError> {
    let user = match fx.perform(GetUserById { user_id }).await? {
        UserLookup::Found(user) => user,
        UserLookup::NotFound { .. } => return Ok("no such user".into()),
    };
    Ok(match fx.perform(ChargeCard { user_id, cents }).await? {
        Charge::Approved { receipt } => {
            format!("charged {} {cents} cents, receipt {receipt}", user.name)
        }
        Charge::Declined { reason } => format!("{}'s card was declined: {reason}", user.name),
    })
}

fn main() {
    let user_id = Uuid::from_u128(7);
    let mut handler = |request: AppRequest| -> Result<AppResponse, EffectError> {
        match request {
            AppRequest::Std(effect::Request::Database(effect::DatabaseRequest::GetUserById(
                GetUserById { user_id },
            ))) => {
                let user = User {
                    id: user_id,
                    email: "grace@example.com".into(),
                    name: "Grace".into(),
                };
                Ok(AppResponse::Std(effect::Response::Database(
                    effect::DatabaseResponse::GetUserById(UserLookup::Found(user)),
                )))
            }
            AppRequest::ChargeCard(ChargeCard { cents, .. }) if cents <= 10_000 => {
                Ok(AppResponse::ChargeCard(Charge::Approved {
                    receipt: format!("r-{cents}"),
                }))
            }
            AppRequest::ChargeCard(_) => Ok(AppResponse::ChargeCard(Charge::Declined {
                reason: "over limit".into(),
            })),
            AppRequest::Std(other) => Err(EffectError::unhandled(
                other.name(),
                vec!["Database".into(), "Payments".into()],
            )),
        }
    };
    for cents in [4_200, 99_999] {
        match run_async(
            |fx| checkout(fx, user_id, cents),
            EngineConfig::default(),
            &mut handler,
        ) {
            Ok(Ok(line)) => println!("{line}"),
            other => {
                eprintln!("checkout failed: {other:?}");
                std::process::exit(1);
            }
        }
    }
}
