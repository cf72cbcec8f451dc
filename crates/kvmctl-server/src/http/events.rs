use super::call::Call;
use axum::extract::Query;
use axum::response::sse::{Event, KeepAlive, Sse};
use std::convert::Infallible;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Only this VM's events.
    vm: Option<String>,
}

/// Server-sent events: VM state changes (`vm.state`), readiness stages (`vm.stage`) and
/// deletions (`vm.deleted`) as they happen, of the VMs the caller may see. Each event's
/// `data` is an `ApiEvent`; a slow reader that fell behind gets a `lagged` event with the
/// number it missed.
#[utoipa::path(get, path = "/v1/events", tag = "system", operation_id = "event_stream", params(EventsQuery),
    responses((status = 200, description = "A text/event-stream of ApiEvent", content_type = "text/event-stream", body = kvmctl_types::api::ApiEvent)))]
pub(crate) async fn events(
    Call { ctx, caller }: Call,
    Query(q): Query<EventsQuery>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let rx = ctx.events.subscribe();
    let scope = caller.owner_scope().map(str::to_owned);
    let stream = futures_util::stream::unfold((rx, scope, q.vm), |(mut rx, scope, vm)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if scope.as_ref().is_some_and(|s| *s != ev.owner) || vm.as_ref().is_some_and(|v| *v != ev.vm) {
                        continue;
                    }
                    let e = Event::default().event(ev.kind.clone()).json_data(&ev).unwrap_or_default();
                    return Some((Ok(e), (rx, scope, vm)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    return Some((Ok(Event::default().event("lagged").data(n.to_string())), (rx, scope, vm)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // A comment first, so the response head and a first frame reach the client at once: a
    // client that waits for the head before subscribing to anything else sees no delay.
    let hello = futures_util::stream::once(async { Ok(Event::default().comment("kvmctl events")) });
    let mut closing = ctx.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let stream = futures_util::StreamExt::take_until(futures_util::StreamExt::chain(hello, stream), closed);
    Sse::new(stream).keep_alive(KeepAlive::default())
}
