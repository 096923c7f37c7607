//! A user's own effect family runs on the runtime: its own interpreter beside the
//! built-in ones, which serve it through `SplitStd`.

use std::time::Duration;

use effectful::effect::{self, GenerateUuid};
use effectful::{Effect, EffectError, EffectId, EmbedStd, Family, Fx};
use effectful_tokio::{Interpreter, RuntimeBuilder, ShardCx, SplitStd, SystemInterpreter};

#[derive(Debug)]
struct ChargeCard {
    cents: u64,
}

#[derive(Debug)]
enum AppRequest {
    Std(effect::Request),
    ChargeCard(ChargeCard),
}

#[derive(Debug)]
enum AppResponse {
    Std(effect::Response),
    Charged(String),
}

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
            AppResponse::Charged(_) => "Payments.ChargeCard",
        }
    }
    fn default_timeout_applies(request: &AppRequest) -> bool {
        match request {
            AppRequest::Std(r) => !r.waits_by_nature(),
            AppRequest::ChargeCard(_) => true,
        }
    }
}

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

impl SplitStd for App {
    fn split_request(request: AppRequest) -> Result<effect::Request, AppRequest> {
        match request {
            AppRequest::Std(r) => Ok(r),
            other => Err(other),
        }
    }
}

impl Effect<App> for ChargeCard {
    type Output = String;
    const NAME: &'static str = "Payments.ChargeCard";
    fn into_request(self) -> AppRequest {
        AppRequest::ChargeCard(self)
    }
    fn from_response(response: AppResponse) -> Result<String, AppResponse> {
        match response {
            AppResponse::Charged(receipt) => Ok(receipt),
            other => Err(other),
        }
    }
}

struct Payments;

impl Interpreter<App> for Payments {
    fn perform(&mut self, cx: &mut ShardCx<'_, App>, id: EffectId, request: AppRequest) {
        let answer = match request {
            AppRequest::ChargeCard(charge) => Ok(AppResponse::Charged(format!(
                "receipt for {} cents",
                charge.cents
            ))),
            other => Err(EffectError::unhandled(App::request_name(&other), vec![])),
        };
        cx.answer(id, answer);
    }
}

#[test]
fn a_custom_family_is_served_by_its_own_interpreter_and_the_built_in_ones() {
    let runtime = RuntimeBuilder::<App>::new()
        .shards(1)
        .interpreter("System", |_| SystemInterpreter::new())
        .interpreter("Payments", |_| Payments)
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        let handle = runtime.handle().spawn(|fx: Fx<App>| async move {
            let order = fx.perform(GenerateUuid {}).await?;
            let receipt = fx.perform(ChargeCard { cents: 1250 }).await?;
            Ok::<_, EffectError>((order.get_version_num(), receipt))
        });
        handle.await.expect("spawned").await
    });
    assert_eq!(
        result.expect("finished").expect("answered"),
        (4, "receipt for 1250 cents".to_string())
    );
    runtime.shutdown(Duration::ZERO);
}
