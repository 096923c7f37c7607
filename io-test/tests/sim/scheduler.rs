//! The seeded scheduler: one seed, one run; another seed, another order.

use super::*;

/// For each client message: four effects of different families at once, then a
/// batch of clock reads, then a reply. Tolerates every fault.
async fn concurrent_rounds(connection: u32, fx: Fx) -> Vec<String> {
    let mut log = Vec::new();
    let mut round = 0;
    while let Ok(text) = fx.perform(ReceiveText {}).await {
        round += 1;
        let ((user, id), (cached, published)) = join(
            join(
                fx.perform(CreateUser {
                    email: format!("c{connection}-r{round}@example.com"),
                    name: text.clone(),
                    password_hash: "h".into(),
                }),
                fx.perform(GenerateUuid {}),
            ),
            join(
                fx.perform(PutCachedValue {
                    key: format!("c{connection}"),
                    value: text.clone().into_bytes(),
                    ttl_seconds: Some(60),
                }),
                fx.perform(publish("rounds", &text)),
            ),
        )
        .await;
        let clocks = fx.perform_all((0..3).map(|_| GetCurrentTime {})).await;
        log.push(format!(
            "{} {} {} {} {} at {}",
            user.is_ok(),
            id.is_ok(),
            cached.is_ok(),
            published.is_ok(),
            clocks.iter().filter(|c| c.is_ok()).count(),
            fx.now()
        ));
        if fx.perform(SendText { text }).await.is_err() {
            break;
        }
    }
    log
}

fn chaos_trace(seed: u64) -> Vec<TraceRecord> {
    let mut config = SimConfig::new(seed);
    config.faults = FaultPlan::chaos();
    config.record_trace = true;
    let connections = (0..12)
        .map(|i| Connection {
            client: i,
            connect_at: Time::from_millis(u64::from(i) * 50),
            messages: (0..5).map(|m| (20 * MS, format!("msg {m}"))).collect(),
            end: ConnectionEnd::Close { after: SEC },
        })
        .collect();
    let mut sim = Simulation::new(config, connections, concurrent_rounds);
    let report = sim.run();
    assert_eq!((report.unfinished, report.late), (0, 0), "{report}");
    sim.trace().to_vec()
}

#[test]
fn the_same_seed_gives_the_same_trace_under_chaos() {
    let (a, b) = (chaos_trace(21), chaos_trace(21));
    assert!(a.len() > 500, "only {} records", a.len());
    assert_eq!(first_divergence(&a, &b), None);
}

#[test]
fn different_seeds_give_different_traces_beyond_the_start_record() {
    let (a, b) = (chaos_trace(21), chaos_trace(22));
    assert!(matches!(a[0], TraceRecord::Start { .. }));
    let (a, b) = (&a[1..], &b[1..]);
    // Both runs agree on the spawn, the first client message and the four requests it
    // causes; the first thing the seed changes is the first UUID the services draw.
    let uuid_answer = |r: &TraceRecord| match r {
        TraceRecord::Response {
            at,
            id,
            result: Ok(Response::System(SystemResponse::GenerateUuid(uuid))),
            delivered: true,
        } => Some((*at, *id, *uuid)),
        _ => None,
    };
    let first_uuid = a
        .iter()
        .position(|r| uuid_answer(r).is_some())
        .expect("the program drew a UUID");
    assert_eq!(first_uuid, 9, "{:#?}", &a[..=first_uuid]);
    let divergence = first_divergence(a, b).expect("the runs differ");
    assert_eq!(divergence.index, first_uuid, "{divergence}");
    assert_eq!(divergence.expected.as_ref(), Some(&a[first_uuid]));
    let (at_a, id_a, uuid_a) = uuid_answer(&a[first_uuid]).expect("a UUID answer");
    let (at_b, id_b, uuid_b) = divergence
        .got
        .as_ref()
        .and_then(uuid_answer)
        .expect("seed 22 got a UUID answer there too");
    assert_eq!((at_a, id_a), (at_b, id_b), "{divergence}");
    assert_ne!(uuid_a, uuid_b, "{divergence}");
}

/// Eight answers that all arrive at the same instant, in the order they came.
async fn simultaneous_answers(_connection: u32, fx: Fx) -> Vec<(usize, Time)> {
    let order = RefCell::new(Vec::new());
    join_all((0..8).map(|i| {
        let (fx, order) = (&fx, &order);
        async move {
            fx.perform(GenerateUuid {})
                .await
                .expect("no faults are planned");
            order.borrow_mut().push((i, fx.now()));
        }
    }))
    .await;
    order.into_inner()
}

fn answer_order(seed: u64) -> Vec<usize> {
    let mut config = SimConfig::new(seed);
    config.faults.latency.system = Latency::fixed(MS);
    let mut sim = Simulation::new(config, vec![quiet(Time::ZERO)], simultaneous_answers);
    sim.run();
    let arrivals = only_result(&sim).expect("the program ends on its own");
    assert!(
        arrivals.iter().all(|(_, at)| *at == Time::from_millis(1)),
        "every answer comes after exactly the fixed latency: {arrivals:?}"
    );
    let order: Vec<usize> = arrivals.into_iter().map(|(i, _)| i).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..8).collect::<Vec<_>>(), "each answer once");
    order
}

#[test]
fn the_seed_decides_the_order_of_simultaneous_answers() {
    let (one, two) = (answer_order(1), answer_order(2));
    assert_ne!(one, two, "seeds 1 and 2 order the same answers differently");
    assert_eq!(one, answer_order(1), "and each seed keeps its order");
    // Not a fixed order either: neither is simply the order of the requests.
    assert!(
        one != (0..8).collect::<Vec<_>>() || two != (0..8).collect::<Vec<_>>(),
        "{one:?} {two:?}"
    );
}
