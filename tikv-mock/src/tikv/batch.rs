//! The BatchCommands stream: many requests per message, answered in completion order.
//!
//! One task reads request messages and runs each sub-request through the same
//! [`Dispatcher`] as unary calls. A sub-request that can complete without waiting (the usual
//! case) runs inline on the reader, so a batch costs no task per request; one that must wait (a
//! delay, hang or dropped-response fault, or an `Empty` with a delay) is moved to a task of its
//! own, so it holds up nobody. Finished responses go through a channel to a writer task that
//! packs whatever is ready, up to 128 per message, in completion order, with `request_ids`
//! parallel to `responses`.
//!
//! Follows TiKV `src/server/service/kv.rs` (`batch_commands`, `handle_batch_commands_request`,
//! `future_handle_empty`, `HealthFeedbackAttacher`): a sub-request without a command gets a
//! response without one; `Empty` answers its `test_id` after `delay_time` ms when that is at
//! least 10; `GetHealthFeedback` answers an empty sub-response and the writer attaches the
//! feedback to it and to the batch, which also carries feedback at most once a second
//! unprompted; a cluster-id mismatch (or a status injected by a fault) fails the whole stream;
//! a dropped response is simply never sent. `Empty` and command-less sub-requests have no gRPC
//! method, so they are neither counted nor seen by fault rules.
//!
//! A stream opened with `tikv-forwarded-host` is served by a dispatcher acting as the target
//! store (see `forward.rs`): every sub-request is the target's, and the stream ends with
//! CANCELLED when it fails or the target stops, as a stream bridged by TiKV's proxy does.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tikv_proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_proto::tikvpb::{
    BatchCommandsEmptyResponse, BatchCommandsRequest, BatchCommandsResponse,
    batch_commands_request, batch_commands_response,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::dispatch::{Dispatcher, Outcome, Request, Response};

/// TiKV's `GRPC_MSG_MAX_BATCH_SIZE`.
const MAX_BATCH: usize = 128;

/// TiKV's default `server.health-feedback-interval`.
const FEEDBACK_INTERVAL: Duration = Duration::from_secs(1);

/// Response messages buffered for a client that reads slowly.
const OUT_BUFFER: usize = 64;

/// The response stream of one BatchCommands call.
pub(crate) type BatchStream = ReceiverStream<Result<BatchCommandsResponse, Status>>;

/// What a finished sub-request hands the writer.
// Each response is moved once, straight into its message; boxing it would only add an
// allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Done {
    Reply(u64, batch_commands_response::Response),
    Fail(Status),
}

/// Serves one BatchCommands call. `forwarded` is set for a stream forwarded to the
/// dispatcher's store: whether that store's server is running.
pub(crate) fn serve(
    dispatcher: Arc<Dispatcher>,
    requests: Streaming<BatchCommandsRequest>,
    forwarded: Option<watch::Receiver<bool>>,
) -> BatchStream {
    let (out_tx, out_rx) = mpsc::channel(OUT_BUFFER);
    // Unbounded so that finishing a request never waits on the client's reading.
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tokio::spawn(read_requests(dispatcher.clone(), requests, done_tx));
    tokio::spawn(write_responses(dispatcher, done_rx, out_tx, forwarded));
    ReceiverStream::new(out_rx)
}

async fn read_requests(
    dispatcher: Arc<Dispatcher>,
    mut requests: Streaming<BatchCommandsRequest>,
    done: mpsc::UnboundedSender<Done>,
) {
    loop {
        let message = tokio::select! {
            message = requests.message() => message,
            // The writer is gone (client went away or the stream failed): stop reading.
            () = done.closed() => return,
        };
        let batch = match message {
            Ok(Some(batch)) => batch,
            // Half-close or a broken connection: what was dispatched still gets answered, then
            // the writer ends the stream once every sender is gone.
            Ok(None) | Err(_) => return,
        };
        for (id, request) in batch.request_ids.into_iter().zip(batch.requests) {
            if !handle(&dispatcher, id, request, &done) {
                return;
            }
        }
    }
}

/// Dispatches one sub-request; false once the stream has failed.
fn handle(
    dispatcher: &Arc<Dispatcher>,
    id: u64,
    request: batch_commands_request::Request,
    done: &mpsc::UnboundedSender<Done>,
) -> bool {
    let cmd = match request.cmd {
        None => return send(done, Done::Reply(id, Default::default())),
        Some(Cmd::Empty(empty)) => {
            let reply = Done::Reply(
                id,
                batch_commands_response::Response {
                    cmd: Some(RespCmd::Empty(BatchCommandsEmptyResponse {
                        test_id: empty.test_id,
                    })),
                },
            );
            if empty.delay_time < 10 {
                return send(done, reply);
            }
            let done = done.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(empty.delay_time)).await;
                let _ = done.send(reply);
            });
            return true;
        }
        Some(cmd) => cmd,
    };
    let dispatcher = dispatcher.clone();
    let mut work = Box::pin(async move { dispatcher.dispatch(Request::Cmd(cmd), true).await });
    // Poll once in place: most requests finish without waiting. The no-op waker is fine because
    // a pending request is moved to a task below, whose first poll registers a real waker.
    match work.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(outcome) => deliver(done, id, outcome),
        Poll::Pending => {
            let done = done.clone();
            tokio::spawn(async move {
                tokio::select! {
                    outcome = work => { deliver(&done, id, outcome); }
                    // Nobody is left to answer: stop waiting on a delay or hang.
                    () = done.closed() => {}
                }
            });
            true
        }
    }
}

fn send(done: &mpsc::UnboundedSender<Done>, item: Done) -> bool {
    done.send(item).is_ok()
}

fn deliver(done: &mpsc::UnboundedSender<Done>, id: u64, outcome: Outcome) -> bool {
    match outcome {
        Outcome::Reply(Response::Cmd(cmd)) => send(
            done,
            Done::Reply(id, batch_commands_response::Response { cmd: Some(cmd) }),
        ),
        // Only `Cmd` requests are batched, so their responses are `Cmd` responses.
        Outcome::Reply(_) => {
            let status = Status::internal("batched request produced a unary response");
            let _ = send(done, Done::Fail(status));
            false
        }
        Outcome::Fail(status) => {
            let _ = send(done, Done::Fail(status));
            false
        }
        Outcome::NoReply => true,
    }
}

async fn write_responses(
    dispatcher: Arc<Dispatcher>,
    mut done: mpsc::UnboundedReceiver<Done>,
    out: mpsc::Sender<Result<BatchCommandsResponse, Status>>,
    mut forwarded: Option<watch::Receiver<bool>>,
) {
    let is_forwarded = forwarded.is_some();
    let mut last_feedback: Option<tokio::time::Instant> = None;
    loop {
        let first = tokio::select! {
            // First: once the target is gone, nothing more comes back from it.
            biased;
            () = target_stopped(&mut forwarded) => {
                let status = Status::cancelled(format!(
                    "tikv-mock: forwarded store {} stopped",
                    dispatcher.store_id
                ));
                let _ = out.send(Err(status)).await;
                return;
            }
            item = done.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        let mut batch = BatchCommandsResponse::default();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Done::Reply(id, response) => {
                    batch.request_ids.push(id);
                    batch.responses.push(response);
                }
                // As in TiKV, the failing batch is replaced by the error, which ends the stream.
                // TiKV's proxy drops the client's call instead of relaying the target's error.
                Done::Fail(status) => {
                    let status = if is_forwarded {
                        Status::cancelled(format!(
                            "tikv-mock: forwarded stream failed: {}",
                            status.message()
                        ))
                    } else {
                        status
                    };
                    let _ = out.send(Err(status)).await;
                    return;
                }
            }
            if batch.responses.len() < MAX_BATCH {
                next = done.try_recv().ok();
            }
        }
        attach_health_feedback(&dispatcher, &mut batch, &mut last_feedback);
        if out.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}

/// Resolves when the target of a forwarded stream stops; never for a direct stream.
async fn target_stopped(forwarded: &mut Option<watch::Receiver<bool>>) {
    match forwarded {
        Some(running) => super::forward::stopped(running).await,
        None => std::future::pending().await,
    }
}

/// Attaches feedback to every GetHealthFeedback sub-response and to the batch when any asked
/// for it, otherwise to the batch when none was attached in the last interval.
fn attach_health_feedback(
    dispatcher: &Dispatcher,
    batch: &mut BatchCommandsResponse,
    last: &mut Option<tokio::time::Instant>,
) {
    let mut feedback = None;
    for response in &mut batch.responses {
        if let Some(RespCmd::GetHealthFeedback(r)) = response.cmd.as_mut() {
            let f = feedback.get_or_insert_with(|| dispatcher.health_feedback());
            r.health_feedback = Some(*f);
        }
    }
    let now = tokio::time::Instant::now();
    if feedback.is_none() && last.is_some_and(|t| now.duration_since(t) < FEEDBACK_INTERVAL) {
        return;
    }
    batch.health_feedback = Some(feedback.unwrap_or_else(|| dispatcher.health_feedback()));
    *last = Some(now);
}
