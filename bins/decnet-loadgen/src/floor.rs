//! `decnet-loadgen floor`: what one frame costs on this machine with no
//! service in the way. A writer sends small frames to loopback sockets that a
//! reader drains, at a paced rate, `--fanout` sockets per event as the hub
//! does for the streams of one attacker; the CPU time of the writer's threads
//! over the frames written is the floor any server pays per frame here:
//! - `--writer blocking`: one thread, one `write(2)` per frame (the syscall
//!   and the loopback TCP path, which also runs the receiver's side);
//! - `--writer tokio`: a task per socket, woken through a `Notify` per frame
//!   by a dispatcher task, writing with tokio (the syscall plus the wake-up
//!   path of a tokio server), on `--workers` worker threads.
//!
//! CPU per thread comes from `/proc/self/task/<tid>/stat`, summed over the
//! threads by name (`floor-writer`, `floor-reader`).

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::procfs::{TICKS_PER_SEC, parse_cpu_ticks};

const WRITER_THREAD: &str = "floor-writer";
const READER_THREAD: &str = "floor-reader";

/// Options of `decnet-loadgen floor`.
#[derive(Debug, Args)]
pub(crate) struct FloorArgs {
    /// Socket pairs (two open files each in this process)
    #[arg(long, default_value_t = 5000)]
    sockets: usize,
    /// Frames written per second, in total
    #[arg(long, default_value_t = 20_000)]
    rate: u32,
    /// Sockets each event is written to (the streams of one attacker)
    #[arg(long, default_value_t = 10)]
    fanout: usize,
    /// Bytes per frame (an attacker event's frame is about 120)
    #[arg(long, default_value_t = 120)]
    frame_bytes: usize,
    /// Seconds of writing
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// blocking (one thread, a write(2) per frame) or tokio (a task per
    /// socket, woken per frame)
    #[arg(long, default_value = "tokio")]
    writer: String,
    /// Worker threads of the tokio writer
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Name of this run in the summary
    #[arg(long, default_value = "floor")]
    label: String,
}

/// What `decnet-loadgen floor` prints (JSON), and the report reads.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FloorSummary {
    /// The run's name.
    pub(crate) label: String,
    /// `blocking` or `tokio`.
    pub(crate) writer: String,
    /// Writer threads.
    pub(crate) workers: usize,
    /// Socket pairs.
    pub(crate) sockets: usize,
    /// Sockets per event.
    pub(crate) fanout: usize,
    /// Bytes per frame.
    pub(crate) frame_bytes: usize,
    /// Frames per second asked.
    pub(crate) rate: u32,
    /// How long the writing took.
    pub(crate) secs: f64,
    /// Frames written.
    pub(crate) frames_written: u64,
    /// Frames the reader got.
    pub(crate) frames_read: u64,
    /// Frames written per second.
    pub(crate) writes_per_sec: f64,
    /// CPU of the writer's threads.
    pub(crate) writer_cpu_secs: f64,
    /// ... per frame written, µs.
    pub(crate) writer_us_per_frame: f64,
    /// CPU of the reader's thread.
    pub(crate) reader_cpu_secs: f64,
    /// ... per frame read, µs.
    pub(crate) reader_us_per_frame: f64,
}

/// CPU seconds (utime + stime) of this process's threads named `name`.
fn thread_cpu(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: the name is between the first '(' and
        // the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if stat.get(open + 1..close) == Some(name) {
            ticks += parse_cpu_ticks(&stat).unwrap_or(0);
        }
    }
    ticks as f64 / TICKS_PER_SEC
}

/// `n` connected pairs over loopback: (the writer's end, the reader's end).
fn pairs(n: usize) -> Result<Vec<(TcpStream, TcpStream)>> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind")?;
    let addr = listener.local_addr().context("local address")?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let client =
            TcpStream::connect(addr).with_context(|| format!("connect {i} (open files limit?)"))?;
        let (server, _) = listener.accept().context("accept")?;
        server.set_nodelay(true).context("TCP_NODELAY")?;
        out.push((server, client));
    }
    Ok(out)
}

/// When event `i` is due, from the start.
fn due(i: u64, events_per_sec: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / events_per_sec)
}

/// Run the floor measurement and print its summary.
pub(crate) fn floor(args: &FloorArgs) -> Result<()> {
    if args.sockets == 0 || args.fanout == 0 || args.rate == 0 || args.frame_bytes == 0 {
        bail!("--sockets, --fanout, --rate and --frame-bytes must be positive");
    }
    if args.fanout > args.sockets {
        bail!("--fanout must not exceed --sockets");
    }
    let workers = args.workers.max(1);
    let blocking = match args.writer.as_str() {
        "blocking" => true,
        "tokio" => false,
        other => bail!("--writer must be blocking or tokio, got {other:?}"),
    };
    let (writers, readers): (Vec<_>, Vec<_>) = pairs(args.sockets)?.into_iter().unzip();
    let read_bytes = Arc::new(AtomicU64::new(0));
    let reader = start_reader(readers, read_bytes.clone())?;
    let mut frame = vec![b'x'; args.frame_bytes];
    if let Some(last) = frame.last_mut() {
        *last = b'\n';
    }
    let events_per_sec = f64::from(args.rate) / args.fanout as f64;
    let events = (events_per_sec * args.secs as f64).round() as u64;
    let groups = args.sockets / args.fanout;
    let writer_before = thread_cpu(WRITER_THREAD);
    let reader_before = thread_cpu(READER_THREAD);
    let started = Instant::now();
    let (written, writer_cpu) = if blocking {
        write_blocking(writers, &frame, events, events_per_sec, args.fanout, groups)?
    } else {
        write_tokio(
            writers,
            &frame,
            events,
            events_per_sec,
            args.fanout,
            groups,
            workers,
        )?
    };
    let secs = started.elapsed().as_secs_f64();
    // Everything written is read before the reader's time is taken.
    let expected = written * args.frame_bytes as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_bytes.load(Ordering::Acquire) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let reader_cpu = thread_cpu(READER_THREAD) - reader_before;
    let read = read_bytes.load(Ordering::Acquire) / args.frame_bytes as u64;
    reader.stop();
    let writer_cpu = writer_cpu - writer_before;
    let per_frame = |cpu: f64, frames: u64| cpu * 1e6 / frames.max(1) as f64;
    let summary = FloorSummary {
        label: args.label.clone(),
        writer: args.writer.clone(),
        workers: if blocking { 1 } else { workers },
        sockets: args.sockets,
        fanout: args.fanout,
        frame_bytes: args.frame_bytes,
        rate: args.rate,
        secs,
        frames_written: written,
        frames_read: read,
        writes_per_sec: written as f64 / secs.max(1e-9),
        writer_cpu_secs: writer_cpu,
        writer_us_per_frame: per_frame(writer_cpu, written),
        reader_cpu_secs: reader_cpu,
        reader_us_per_frame: per_frame(reader_cpu, read),
    };
    if read < written {
        eprintln!("floor: {} of {written} frames read within 10 s", read);
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &summary).context("summary")?;
    writeln!(out).context("summary")?;
    Ok(())
}

/// The reading side: one thread, a current-thread runtime, a task per
/// socket counting what it reads.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Reader {
    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

fn start_reader(sockets: Vec<TcpStream>, read: Arc<AtomicU64>) -> Result<Reader> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(READER_THREAD.to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    for socket in sockets {
                        let read = read.clone();
                        let socket = match socket
                            .set_nonblocking(true)
                            .and_then(|()| tokio::net::TcpStream::from_std(socket))
                        {
                            Ok(socket) => socket,
                            Err(error) => {
                                let _ = ready_tx.send(Err(error.into()));
                                return;
                            }
                        };
                        tokio::spawn(async move {
                            let mut socket = socket;
                            let mut buf = vec![0u8; 4096];
                            while let Ok(n) = socket.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                read.fetch_add(n as u64, Ordering::AcqRel);
                            }
                        });
                    }
                    let _ = ready_tx.send(Ok(()));
                    while !stop.load(Ordering::Acquire) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
            })
            .context("reader thread")?
    };
    ready_rx
        .recv()
        .context("the reader thread stopped")?
        .context("reader setup")?;
    Ok(Reader { stop, thread })
}

/// One thread writes every frame with a blocking `write(2)`, paced.
fn write_blocking(
    mut sockets: Vec<TcpStream>,
    frame: &[u8],
    events: u64,
    events_per_sec: f64,
    fanout: usize,
    groups: usize,
) -> Result<(u64, f64)> {
    let frame = frame.to_vec();
    let thread = std::thread::Builder::new()
        .name(WRITER_THREAD.to_owned())
        .spawn(move || -> Result<(u64, f64)> {
            let start = Instant::now();
            let mut written = 0u64;
            for i in 0..events {
                let wait = due(i, events_per_sec).saturating_sub(start.elapsed());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                let group = (i as usize) % groups;
                for socket in &mut sockets[group * fanout..(group + 1) * fanout] {
                    socket.write_all(&frame).context("write")?;
                    written += 1;
                }
            }
            // Measured here: the thread's CPU before it ends.
            Ok((written, thread_cpu(WRITER_THREAD)))
        })
        .context("writer thread")?;
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
}

/// A task per socket, woken through its `Notify` by a dispatcher task per
/// event, writes its frame with tokio.
fn write_tokio(
    sockets: Vec<TcpStream>,
    frame: &[u8],
    events: u64,
    events_per_sec: f64,
    fanout: usize,
    groups: usize,
    workers: usize,
) -> Result<(u64, f64)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(WRITER_THREAD)
        .enable_all()
        .build()
        .context("writer runtime")?;
    let frame = bytes::Bytes::copy_from_slice(frame);
    let written = Arc::new(AtomicU64::new(0));
    let result = runtime.block_on({
        let written = written.clone();
        async move {
            let mut wakers = Vec::with_capacity(sockets.len());
            let mut tasks = Vec::with_capacity(sockets.len());
            for socket in sockets {
                socket.set_nonblocking(true).context("non-blocking")?;
                let mut socket = tokio::net::TcpStream::from_std(socket).context("register")?;
                let notify = Arc::new(Notify::new());
                wakers.push(notify.clone());
                let frame = frame.clone();
                let written = written.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        notify.notified().await;
                        if socket.write_all(&frame).await.is_err() {
                            return;
                        }
                        written.fetch_add(1, Ordering::AcqRel);
                    }
                }));
            }
            // The dispatcher is a task too, as the hub's bus task is.
            let dispatcher = tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                for i in 0..events {
                    tokio::time::sleep_until(start + due(i, events_per_sec)).await;
                    let group = (i as usize) % groups;
                    for notify in &wakers[group * fanout..(group + 1) * fanout] {
                        notify.notify_one();
                    }
                }
            });
            dispatcher.await.context("dispatcher")?;
            // The last wake-ups write before the time is taken.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let cpu = thread_cpu(WRITER_THREAD);
            for task in tasks {
                task.abort();
            }
            Ok::<_, anyhow::Error>(cpu)
        }
    });
    let cpu = result?;
    Ok((written.load(Ordering::Acquire), cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_due_at_the_rate() {
        assert_eq!(due(0, 2000.0), Duration::ZERO);
        assert_eq!(due(2000, 2000.0), Duration::from_secs(1));
        assert_eq!(due(1, 4.0), Duration::from_millis(250));
    }

    #[test]
    fn a_thread_s_cpu_is_found_by_name() {
        let busy = std::thread::Builder::new()
            .name("floor-test-busy".to_owned())
            .spawn(|| {
                let start = Instant::now();
                let mut x = 0u64;
                while start.elapsed() < Duration::from_millis(300) {
                    x = x.wrapping_mul(31).wrapping_add(7);
                }
                let cpu = thread_cpu("floor-test-busy");
                (x, cpu)
            })
            .expect("spawn");
        let (_, cpu) = busy.join().expect("join");
        // 300 ms of spinning, read at 10 ms resolution, on a shared machine.
        assert!(cpu > 0.05, "{cpu}");
        assert_eq!(thread_cpu("no-such-thread-name"), 0.0);
    }

    #[test]
    fn a_small_run_writes_and_reads_every_frame() {
        for writer in ["blocking", "tokio"] {
            let args = FloorArgs {
                sockets: 20,
                rate: 400,
                fanout: 10,
                frame_bytes: 50,
                secs: 1,
                writer: writer.to_owned(),
                workers: 2,
                label: "t".to_owned(),
            };
            let (writers, readers): (Vec<_>, Vec<_>) =
                pairs(args.sockets).expect("pairs").into_iter().unzip();
            let read = Arc::new(AtomicU64::new(0));
            let reader = start_reader(readers, read.clone()).expect("reader");
            let frame = vec![b'x'; args.frame_bytes];
            let (written, _) = if writer == "blocking" {
                write_blocking(writers, &frame, 40, 40.0, 10, 2).expect("write")
            } else {
                write_tokio(writers, &frame, 40, 40.0, 10, 2, 2).expect("write")
            };
            assert_eq!(written, 400, "{writer}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while read.load(Ordering::Acquire) < 400 * 50 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(read.load(Ordering::Acquire), 400 * 50, "{writer}");
            reader.stop();
        }
    }
}
