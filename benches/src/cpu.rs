//! A criterion [`Measurement`] of the process's CPU time (user and system, every
//! thread), for benches whose wall time is bounded by another process (a database
//! server): it shows what the client itself spends.
//!
//! Read from `/proc/self/task/*/schedstat` (nanoseconds on CPU per thread, Linux), so
//! no `unsafe` call is needed; threads that exited during a measurement are not
//! counted, so keep the measured threads alive across it (runtimes built before).

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};

/// CPU time of the whole process, in nanoseconds.
pub fn process_cpu_nanos() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Whether this system reports per-thread CPU time (Linux with schedstat).
pub fn available() -> bool {
    std::fs::read_to_string("/proc/self/schedstat").is_ok()
}

/// The process's CPU time as a criterion measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessCpu;

impl Measurement for ProcessCpu {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        process_cpu_nanos()
    }

    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(process_cpu_nanos().saturating_sub(start))
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e-3, "µs cpu")
        } else if typical < 1e9 {
            (1e-6, "ms cpu")
        } else {
            (1e-9, "s cpu")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &criterion::Throughput,
        values: &mut [f64],
    ) -> &'static str {
        // values are ns of CPU per iteration: elements per CPU second.
        let per = match throughput {
            criterion::Throughput::Elements(n) | criterion::Throughput::Bytes(n) => *n as f64,
            _ => 1.0,
        };
        for v in values {
            *v = per * 1e9 / *v;
        }
        "elem/cpu-s"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns cpu"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinning_costs_cpu_time_and_sleeping_does_not() {
        assert!(available(), "this measurement needs Linux schedstat");
        let m = ProcessCpu;
        let start = m.start();
        // Spin until the process has used 15 ms of CPU: on a busy machine a thread
        // spinning for a fixed 150 ms of wall time got less than that. Were spinning
        // not counted, the 30 s limit would end it.
        let until = std::time::Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        let mut spun = Duration::ZERO;
        while spun < Duration::from_millis(15) && std::time::Instant::now() < until {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            spun = m.end(start);
        }
        assert!(x > 0);
        assert!(
            spun >= Duration::from_millis(15),
            "{spun:?} in 30 s of spinning"
        );
        let start = m.start();
        std::thread::sleep(Duration::from_millis(50));
        let slept = m.end(start);
        assert!(slept < Duration::from_millis(10), "{slept:?}");
    }
}
