//! A program of the user's own family simulated, held to a property over seeds, and
//! replayed from its trace: the user's fake answers the family's own effect beside
//! the built-in fakes, with latency, injected errors and lost answers.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use effectful::effect::{self, CacheLookup, GetCachedValue, PutCachedValue};
use effectful::{Effect, EffectError, EmbedStd, Family, Fx, Time};
use effectful_test::fault::Latency;
use effectful_test::sim::{FamilyFake, NoConnections, SimConfig, SimFamily, Simulation};
use effectful_test::trace::{
    ReplayError, TraceRecord, read_trace, replay_family_with_jobs, write_trace,
};
use serde::{Deserialize, Serialize};

/// Charge `cents` for `order`; the same order is charged once, however often asked.
#[derive(Debug, Serialize, Deserialize)]
struct ChargeCard {
    order: u32,
    cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum AppRequest {
    Std(effect::Request),
    ChargeCard(ChargeCard),
}

#[derive(Debug, Serialize, Deserialize)]
enum AppResponse {
    Std(effect::Response),
    Receipt(String),
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
            AppResponse::Receipt(_) => "Payments.ChargeCard",
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

impl SimFamily for App {
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
            AppResponse::Receipt(receipt) => Ok(receipt),
            other => Err(other),
        }
    }
}

/// The payment provider's ledger: one charge per order.
#[derive(Default)]
struct Ledger {
    charges: Vec<(u32, u64, String)>,
    requests: u32,
}

/// The fake payment provider: idempotent by order, slow, and unreliable.
struct FakePayments(Rc<RefCell<Ledger>>);

impl FamilyFake<App> for FakePayments {
    fn handle(&mut self, now: Time, request: AppRequest) -> Result<AppResponse, EffectError> {
        let AppRequest::ChargeCard(ChargeCard { order, cents }) = request else {
            return Err(EffectError::unhandled("Payments", vec![]));
        };
        let mut ledger = self.0.borrow_mut();
        ledger.requests += 1;
        if let Some((_, _, receipt)) = ledger.charges.iter().find(|(o, ..)| *o == order) {
            return Ok(AppResponse::Receipt(receipt.clone()));
        }
        let receipt = format!("r{order}@{}", now.since_epoch().as_millis());
        ledger.charges.push((order, cents, receipt.clone()));
        Ok(AppResponse::Receipt(receipt))
    }
    fn latency(&self) -> Latency {
        Latency {
            base: Duration::from_millis(2),
            jitter: Duration::from_millis(8),
            spike_rate: 0.0,
            spike: Duration::ZERO,
        }
    }
    fn error_rate(&self) -> f64 {
        0.2
    }
    fn lost_answer_rate(&self) -> f64 {
        0.1
    }
}

/// Checks out `order`: notes it in the cache (a built-in effect), charges the card
/// (ours), retrying failures, notes the receipt, and reads it back.
async fn checkout(order: u32, fx: Fx<App>) -> Result<String, EffectError> {
    let key = format!("order/{order}");
    fx.perform(PutCachedValue {
        key: key.clone(),
        value: b"pending".to_vec(),
        ttl_seconds: None,
    })
    .await?;
    let mut attempt = 0;
    let receipt = loop {
        let charge = ChargeCard {
            order,
            cents: 100 + u64::from(order),
        };
        match fx.perform_timeout(charge, Duration::from_millis(200)).await {
            Ok(receipt) => break receipt,
            Err(_) if attempt < 8 => {
                attempt += 1;
                fx.sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    };
    fx.perform(PutCachedValue {
        key: key.clone(),
        value: receipt.clone().into_bytes(),
        ttl_seconds: None,
    })
    .await?;
    // The receipt as the cache gives it back.
    match fx.perform(GetCachedValue { key }).await? {
        CacheLookup::Hit { value, .. } => Ok(String::from_utf8_lossy(&value).into_owned()),
        CacheLookup::Miss { .. } => Ok("(not cached)".into()),
    }
}

const ORDERS: u32 = 12;

/// The connection program of a simulation of jobs alone: never called.
async fn no_connection(_: u32, _: Fx<App>) -> Result<String, EffectError> {
    std::future::pending().await
}

type Outcome = Result<String, EffectError>;

/// A simulation of checkout jobs alone.
type CheckoutSim = Simulation<Outcome, NoConnections<Outcome, App>, App>;

/// A simulation of `ORDERS` checkouts, a few milliseconds apart, and its ledger.
fn simulation(seed: u64, record_trace: bool) -> (CheckoutSim, Rc<RefCell<Ledger>>) {
    let mut config = SimConfig::new(seed);
    config.record_trace = record_trace;
    let mut sim = Simulation::without_connections(config);
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    sim.set_family_fake(FakePayments(ledger.clone()));
    for order in 0..ORDERS {
        let at = Time::from_millis(u64::from(order) * 3);
        sim.spawn_at(at, "checkout", move |fx| checkout(order, fx));
    }
    (sim, ledger)
}

#[test]
fn every_order_is_charged_once_whatever_the_seed() {
    let mut faults_seen = 0;
    for seed in 0..40 {
        let (mut sim, ledger) = simulation(seed, false);
        let report = sim.run();
        faults_seen += report.faults;
        assert_eq!(report.unfinished, 0, "seed {seed}");
        let ledger = ledger.borrow();
        assert_eq!(ledger.charges.len(), ORDERS as usize, "seed {seed}");
        for (order, result) in sim.job_results().iter().enumerate() {
            let Some(Ok(Ok(receipt))) = result else {
                panic!("seed {seed}: order {order} ended {result:?}");
            };
            let charged: Vec<_> = ledger
                .charges
                .iter()
                .filter(|(o, ..)| *o == order as u32)
                .collect();
            assert_eq!(charged.len(), 1, "seed {seed}: order {order}");
            assert_eq!(&charged[0].2, receipt, "seed {seed}: order {order}");
            assert_eq!(charged[0].1, 100 + order as u64);
        }
        // The fake's faults are the simulator's: some requests never reached it.
        assert!(ledger.requests >= ORDERS, "seed {seed}");
    }
    assert!(
        faults_seen > 0,
        "the fake's error and loss rates injected no fault"
    );
}

#[test]
fn a_custom_family_run_replays_from_its_trace_and_a_changed_answer_diverges() {
    let (mut sim, _ledger) = simulation(5, true);
    let report = sim.run();
    assert_eq!(report.unfinished, 0);
    let records = sim.trace().to_vec();
    let own_requests = records
        .iter()
        .filter(|r| matches!(r, TraceRecord::OwnRequest { .. }))
        .count();
    let own_answers = records
        .iter()
        .filter(|r| matches!(r, TraceRecord::OwnResponse { .. }))
        .count();
    assert!(
        own_requests >= ORDERS as usize,
        "{own_requests} own requests"
    );
    assert!(own_answers > 0);

    // Through JSON lines and back, as a trace file goes.
    let mut file = Vec::new();
    write_trace(&mut file, &records).unwrap();
    let read = read_trace(file.as_slice(), effectful_test::trace::DEFAULT_MAX_LINE).unwrap();
    assert_eq!(read, records);

    let stats = replay_family_with_jobs(&read, no_connection, checkout).expect("the trace replays");
    assert!(stats.inputs > 0 && stats.outputs > 0);

    // A receipt changed in the trace: the program stores a different value, and the
    // replay says where.
    let mut changed = read.clone();
    let at = changed
        .iter()
        .position(|r| matches!(r, TraceRecord::OwnResponse { result: Ok(_), .. }))
        .unwrap();
    if let TraceRecord::OwnResponse { result, .. } = &mut changed[at] {
        *result = Ok(serde_json::json!({ "Receipt": "forged" }));
    }
    let error = replay_family_with_jobs(&changed, no_connection, checkout).unwrap_err();
    assert!(
        matches!(error, ReplayError::Divergence { index, .. } if index > at),
        "{error}"
    );
}
