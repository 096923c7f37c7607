//! The tokio runtime keeps the cancellation contract, the same one the simulator
//! passes (`effectful_test::contract`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use effectful::effect::{CacheLookup, CacheRequest, CacheResponse, MissReason, Request, Response};
use effectful::{EffectError, EffectId};
use effectful_test::contract::{
    CancellationDriver, ContractProgram, ContractRun, check_cancellation,
};
use effectful_tokio::{Interpreter, Runtime, ShardCx};

/// A Cache service in another task: each request takes `leg` to arrive, is applied
/// unless it was cancelled on the way, and its answer takes `leg` more.
struct SlowCache {
    leg: Duration,
    store: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    cancelled: Rc<RefCell<HashSet<EffectId>>>,
}

impl Interpreter for SlowCache {
    fn perform(&mut self, cx: &mut ShardCx<'_>, id: EffectId, request: Request) {
        let Request::Cache(request) = request else {
            return cx.answer(id, Err(EffectError::unhandled(request.name(), vec![])));
        };
        let (leg, store, cancelled, replier) = (
            self.leg,
            self.store.clone(),
            self.cancelled.clone(),
            cx.replier(),
        );
        tokio::task::spawn_local(async move {
            tokio::time::sleep(leg).await;
            if cancelled.borrow_mut().remove(&id) {
                return; // dropped on its way: never applied, never answered
            }
            let response = {
                let mut store = store.lock().expect("not poisoned");
                match request {
                    CacheRequest::PutCachedValue(put) => {
                        store.insert(put.key, put.value);
                        CacheResponse::PutCachedValue(())
                    }
                    CacheRequest::GetCachedValue(get) => {
                        CacheResponse::GetCachedValue(match store.get(&get.key) {
                            Some(value) => CacheLookup::Hit {
                                value: value.clone(),
                                ttl_remaining: None,
                            },
                            None => CacheLookup::Miss {
                                key: get.key,
                                reason: MissReason::NotFound,
                            },
                        })
                    }
                    other => panic!("the contract does not use {other:?}"),
                }
            };
            tokio::time::sleep(leg).await;
            replier.answer(id, Ok(Response::Cache(response)));
        });
    }

    fn cancel(&mut self, _cx: &mut ShardCx<'_>, id: EffectId) {
        self.cancelled.borrow_mut().insert(id);
    }
}

struct Tokio;

impl CancellationDriver for Tokio {
    fn run_in_turn(&mut self, leg: Duration, programs: Vec<ContractProgram>) -> ContractRun {
        let store = Arc::new(Mutex::new(HashMap::new()));
        let runtime = Runtime::builder()
            .shards(1)
            .interpreter("Cache", move |_| SlowCache {
                leg,
                store: store.clone(),
                cancelled: Rc::default(),
            })
            .build()
            .expect("runtime");
        let results = runtime.block_on(async {
            let mut results = Vec::new();
            for program in programs {
                let handle = runtime.handle().spawn(program).await.expect("spawned");
                results.push(handle.await);
            }
            results
        });
        let stale_answers = runtime
            .stats()
            .snapshot()
            .family("Cache")
            .expect("registered")
            .stale;
        runtime.shutdown(Duration::ZERO);
        ContractRun {
            results,
            stale_answers,
        }
    }
}

#[test]
fn the_tokio_runtime_drops_queued_effects_and_delivers_in_flight_answers_as_stale() {
    check_cancellation(&mut Tokio, Duration::from_millis(100));
}
