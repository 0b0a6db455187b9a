//! W0, the limits of this machine that no broker can beat: loopback TCP throughput (what the network
//! stack moves between two threads) and raw append+fdatasync at the batch sizes a broker writes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::rows::{Measurement, Row};
use crate::{raw, Plan};

/// Bytes per `write` on the loopback connection: large, like a broker's fetch responses.
const TCP_WRITE_BYTES: usize = 1 << 20;

/// One loopback run: a writer thread streams `TCP_WRITE_BYTES` writes to a reader thread that
/// discards them, for `duration`; the rate is bytes read over the time to read them.
fn tcp_loopback(duration: Duration) -> anyhow::Result<Measurement> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let address = listener.local_addr()?;
    let writer = thread::Builder::new().name("bench-tcp-writer".to_string()).spawn(move || {
        let mut stream = TcpStream::connect(address).context("connecting over loopback")?;
        let buffer: Vec<u8> = (0..TCP_WRITE_BYTES).map(|index| (index % 251) as u8).collect();
        let started = Instant::now();
        while started.elapsed() < duration {
            stream.write_all(&buffer).context("writing over loopback")?;
        }
        anyhow::Ok(())
    })?;
    let (mut stream, _) = listener.accept().context("accepting the loopback connection")?;
    let mut buffer = vec![0u8; TCP_WRITE_BYTES];
    let mut bytes = 0u64;
    let started = Instant::now();
    loop {
        let read = stream.read(&mut buffer).context("reading over loopback")?;
        if read == 0 {
            break;
        }
        bytes += read as u64;
    }
    let elapsed = started.elapsed();
    writer.join().map_err(|_| anyhow::anyhow!("the loopback writer panicked"))??;
    Ok(Measurement { records: 0, value_bytes: bytes, elapsed, latencies_us: Vec::new(), cost: None })
}

/// Runs both limits `plan.runs` times, interleaved, and returns one row for TCP and one per raw
/// batch size.
pub fn run(plan: &Plan, data_dir: &Path) -> anyhow::Result<Vec<Row>> {
    let duration = if plan.args.smoke { Duration::from_millis(200) } else { Duration::from_secs(3) };
    let batch_sizes = &plan.args.raw_batch_bytes;
    let mut tcp = Vec::new();
    let mut raws: Vec<Vec<Measurement>> = vec![Vec::new(); batch_sizes.len()];
    for index in 0..plan.runs {
        eprintln!("run {}/{}: loopback TCP for {duration:?}", index + 1, plan.runs);
        tcp.push(tcp_loopback(duration)?);
        for (slot, &batch_bytes) in batch_sizes.iter().enumerate() {
            eprintln!("run {}/{}: raw append+fdatasync of {batch_bytes} B", index + 1, plan.runs);
            // The time bound ends it; the byte bound is only a cap on the file.
            let outcome = raw::run(data_dir, batch_bytes, plan.backlog_bytes, duration)?;
            raws[slot].push(Measurement {
                records: outcome.writes,
                value_bytes: outcome.bytes,
                elapsed: outcome.elapsed,
                latencies_us: outcome.fdatasync_latencies_us,
                cost: None,
            });
        }
    }
    let mut rows = vec![Row {
        workload: "W0 limit".to_string(),
        system: "loopback TCP, 1 connection".to_string(),
        durability: "none (memory to memory)".to_string(),
        record_bytes: TCP_WRITE_BYTES,
        setting: "1 MiB writes".to_string(),
        runs: tcp,
    }];
    for (&batch_bytes, runs) in batch_sizes.iter().zip(raws) {
        rows.push(Row {
            workload: "W0 limit".to_string(),
            system: "raw append+fdatasync, 1 thread".to_string(),
            durability: "fdatasync after each write".to_string(),
            record_bytes: batch_bytes,
            setting: "write = batch; ack = fdatasync latency".to_string(),
            runs,
        });
    }
    Ok(rows)
}
