//! An HTTP gateway in front of an inference worker, traced end to end: a client's request
//! carries a `traceparent`; the gateway (tokio, multi-threaded) handles it across awaits with
//! async slices and `tracing` spans (through slicetrace's layer), and forwards it to a worker
//! process with the context in the headers; the worker's scheduler thread traces prefill and
//! decode steps under the gateway's forwarding slice. One trace, from the client's span to the
//! worker's decode slices.
//!
//! Run: `cargo run --example gateway --features tracing,http`. The example starts the worker
//! (itself, with the argument `worker`) and a client that sends `GATEWAY_REQUESTS` requests
//! (default 8), then stops both. Spans go to `slicetrace-gateway.json` and
//! `slicetrace-worker.json` (trace-event files for ui.perfetto.dev), or with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, to that collector.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use slicetrace::layer::SliceLayer;
use slicetrace::options::{req_start_with, ReqStart};
use slicetrace::w3c::http_headers;
use slicetrace::{name, AsyncSlice, Config, End, InSlice, PropagateContext, Rid};
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::layer::SubscriberExt;

type Body = Full<Bytes>;
type Error = Box<dyn std::error::Error + Send + Sync>;

/// The header carrying the request id from the gateway to the worker.
const RID_HEADER: &str = "x-request-id";

/// The client's trace: every request it sends is a child of this span.
const CLIENT_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn main() -> Result<(), Error> {
    match std::env::args().nth(1).as_deref() {
        Some("worker") => worker(),
        _ => gateway(),
    }
}

/// The request id a request's headers carry.
fn rid_text(headers: &hyper::HeaderMap) -> String {
    headers
        .get(RID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

/// Sends one request and returns its status and body.
async fn send(addr: SocketAddr, req: Request<Body>) -> Result<(StatusCode, Bytes), Error> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// Serves `listener` with `handle` until the process ends.
async fn serve<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<Body>, Error>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(handle);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// The gateway.

fn gateway() -> Result<(), Error> {
    let guard = slicetrace::init(Config::from_env_or_file(
        "gateway",
        "slicetrace-gateway.json",
    )?)?;
    let subscriber =
        tracing_subscriber::registry().with(SliceLayer::new().with_targets(["gateway"]));
    tracing::subscriber::set_global_default(subscriber)?;

    // The worker: this program again, which prints its port.
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("worker")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no worker stdout")?).read_line(&mut line)?;
    let worker: SocketAddr = line
        .trim()
        .strip_prefix("PORT ")
        .ok_or("no worker port")?
        .parse()?;

    let requests: usize = std::env::var("GATEWAY_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stats = rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener, move |req| handle(req, worker)));
        // The client: requests at once, each under the client's span.
        let mut sent = Vec::new();
        for i in 0..requests {
            let req = Request::post("/generate")
                .header("traceparent", CLIENT_TRACEPARENT)
                .header("tracestate", "client=demo")
                .header(RID_HEADER, format!("req-{i:04}"))
                .body(Body::from(format!("prompt {i}")))?;
            sent.push(tokio::spawn(send(addr, req)));
        }
        for s in sent {
            let (status, body) = s.await??;
            println!("{status} {}", String::from_utf8_lossy(&body));
        }
        let stop = Request::post("/shutdown").body(Body::default())?;
        send(worker, stop).await?;
        Ok::<_, Error>(guard.shutdown_async().await)
    })?;
    child.wait()?;
    eprintln!(
        "gateway: {} requests, {} spans exported",
        stats.requests_finished, stats.spans_exported
    );
    Ok(())
}

/// One request through the gateway: its upstream from the headers (a bad header starts a new
/// trace), the request started, routed and forwarded across awaits.
async fn handle(req: Request<Incoming>, worker: SocketAddr) -> Result<Response<Body>, Error> {
    let text = rid_text(req.headers());
    let upstream = http_headers::extract(req.headers()).ok().flatten();
    let rid = req_start_with(
        text.as_str(),
        ReqStart {
            parent: upstream.as_ref().map(|u| &u.context),
            tracestate: upstream.as_ref().and_then(|u| u.tracestate.as_deref()),
            role: Some("gateway"),
            no_room_span: true,
            ..ReqStart::default()
        },
    );
    // Taken on the thread that started the request, before any await.
    let ctx = slicetrace::propagate_context(rid);
    let prompt = req.into_body().collect().await?.to_bytes();
    // The instrumented function is called inside the slice, so that its span nests in it.
    let result = async { route_and_forward(rid, &text, ctx, prompt, worker).await }
        .in_slice(name!("handle"), rid)
        .await;
    slicetrace::req_finish(rid);
    let (status, body) = result?;
    Ok(Response::builder().status(status).body(Body::from(body))?)
}

#[tracing::instrument(target = "gateway", skip_all, fields(rid = rid.0, prompt_bytes = prompt.len()))]
async fn route_and_forward(
    rid: Rid,
    text: &str,
    ctx: Option<PropagateContext>,
    prompt: Bytes,
    worker: SocketAddr,
) -> Result<(StatusCode, Bytes), Error> {
    let pick = async {
        tokio::time::sleep(Duration::from_micros(300)).await;
        tracing::info!(target: "gateway", worker = 0i64, "picked a worker");
    };
    pick.in_slice(name!("pick_worker"), rid).await;
    let forward = AsyncSlice::start(name!("forward"), rid);
    let mut out = Request::post("/generate")
        .header(RID_HEADER, text)
        .body(Body::from(prompt))?;
    if let Some(ctx) = ctx {
        http_headers::inject(&forward.context(&ctx), None, out.headers_mut());
    }
    let answer = send(worker, out).await;
    forward.event(name!("response"));
    drop(forward);
    answer
}

// The worker.

/// A request handed to the scheduler thread, with its context and where to answer.
struct Job {
    rid_text: String,
    ctx: Option<PropagateContext>,
    done: tokio::sync::oneshot::Sender<String>,
}

fn worker() -> Result<(), Error> {
    let guard = slicetrace::init(Config::from_env_or_file(
        "worker",
        "slicetrace-worker.json",
    )?)?;
    let (jobs, queue) = mpsc::channel::<Job>();
    let scheduler = std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || scheduler(queue))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("PORT {}", listener.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = std::sync::Arc::new(std::sync::Mutex::new(Some(stop_tx)));
        let jobs = std::sync::Arc::new(std::sync::Mutex::new(jobs));
        let server = serve(listener, move |req: Request<Incoming>| {
            let (jobs, stop) = (jobs.clone(), stop.clone());
            async move {
                if req.uri().path() == "/shutdown" {
                    if let Some(s) = stop.lock().map_err(|_| "poisoned")?.take() {
                        let _ = s.send(());
                    }
                    return Ok(Response::new(Body::default()));
                }
                let rid_text = rid_text(req.headers());
                let ctx = http_headers::extract(req.headers())
                    .ok()
                    .flatten()
                    .map(|u| u.context);
                let (done, answer) = tokio::sync::oneshot::channel();
                let job = Job {
                    rid_text,
                    ctx,
                    done,
                };
                jobs.lock().map_err(|_| "poisoned")?.send(job)?;
                Ok::<_, Error>(Response::new(Body::from(answer.await?)))
            }
        });
        tokio::select! {
            _ = server => {}
            _ = stop_rx => {}
        }
        Ok::<_, Error>(())
    })?;
    drop(rt);
    scheduler.join().map_err(|_| "scheduler panicked")?;
    guard.shutdown();
    Ok(())
}

/// The worker's scheduler: each request joins the gateway's trace under its forwarding slice,
/// then runs prefill and a few decode steps on this thread.
fn scheduler(queue: mpsc::Receiver<Job>) {
    slicetrace::set_thread_info("scheduler", Some(0), None);
    for job in queue {
        let rid = Rid::from_str_id(&job.rid_text);
        match &job.ctx {
            Some(ctx) => slicetrace::set_propagate_context(job.rid_text.as_str(), ctx),
            None => {
                slicetrace::req_start(job.rid_text.as_str(), None);
            }
        }
        slicetrace::slice_start(name!("prefill"), rid);
        std::thread::sleep(Duration::from_micros(200));
        slicetrace::slice_end(name!("prefill"), rid, End::PLAIN);
        let steps = 4;
        for step in 0..steps {
            slicetrace::slice_start(name!("decode"), rid);
            std::thread::sleep(Duration::from_micros(100));
            let end = if step + 1 == steps {
                End::THREAD_FINISH
            } else {
                End::PLAIN
            };
            slicetrace::slice_end(name!("decode"), rid, end);
        }
        if job.ctx.is_none() {
            slicetrace::req_finish(rid);
        }
        let _ = job.done.send(format!("{}: 4 tokens", job.rid_text));
    }
}
