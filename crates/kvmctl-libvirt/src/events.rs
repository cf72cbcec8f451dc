//! Domain lifecycle events (started, stopped, crashed, defined, undefined, ...) from a node.
//!
//! libvirt delivers events through an event loop the application runs. One loop thread
//! serves the whole process (libvirt's default implementation, registered once); each
//! watcher keeps its own connection open on a thread of its own, re-opening it when libvirtd
//! restarts (keepalive notices a dead daemon), and forwards the name of every domain an
//! event is about. The virt crate binds the event loop but not event registration, so that
//! one call goes to libvirt directly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;
use virt::connect::Connect;
use virt::sys;

type Sink = Box<dyn Fn(Option<String>) + Send + Sync>;

/// Stops its watcher thread when dropped.
pub struct EventWatch {
    stop: Arc<AtomicBool>,
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn event_loop_start() {
    static START: Once = Once::new();
    START.call_once(|| {
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::error!(error = %e, "cannot register libvirt's event loop; VM states follow libvirt by the reconciler's timer only");
            return;
        }
        let spawned = std::thread::Builder::new().name("libvirt-events".into()).spawn(|| loop {
            if let Err(e) = virt::event::event_run_default_impl() {
                tracing::warn!(error = %e, "libvirt event loop iteration failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the libvirt event loop thread");
        }
    });
}

/// Calls `sink(Some(domain))` for every lifecycle event on the node at `uri`, and
/// `sink(None)` each time the watch (re)connects, since events may have been missed while
/// it was not connected.
pub fn lifecycle_watch(uri: String, sink: impl Fn(Option<String>) + Send + Sync + 'static) -> EventWatch {
    event_loop_start();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let sink: Arc<Sink> = Arc::new(Box::new(sink));
    let spawned = std::thread::Builder::new().name("libvirt-watch".into()).spawn(move || {
        while !stopping.load(Ordering::SeqCst) {
            match Connect::open(Some(&uri)) {
                Ok(conn) => watch_connection(conn, &sink, &stopping),
                Err(e) => tracing::debug!(%uri, error = %e, "event watch cannot connect yet"),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the libvirt event watch thread");
    }
    EventWatch { stop }
}

fn watch_connection(mut conn: Connect, sink: &Arc<Sink>, stopping: &AtomicBool) {
    let _ = conn.set_keep_alive(2, 3);
    let opaque = Box::into_raw(Box::new(sink.clone())).cast::<std::os::raw::c_void>();
    // SAFETY: the callback matches virConnectDomainEventCallback, the signature libvirt uses
    // for VIR_DOMAIN_EVENT_ID_LIFECYCLE (the generic type is what the C API takes). `opaque`
    // is a leaked Arc<Sink>, given back to `sink_free` by libvirt when the callback is
    // deregistered or the connection closes.
    let id = unsafe {
        let cb: sys::virConnectDomainEventCallback = Some(on_lifecycle);
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as i32,
            std::mem::transmute::<sys::virConnectDomainEventCallback, sys::virConnectDomainEventGenericCallback>(cb),
            opaque,
            Some(sink_free),
        )
    };
    if id < 0 {
        // SAFETY: registration failed, so libvirt did not take `opaque`.
        drop(unsafe { Box::from_raw(opaque.cast::<Arc<Sink>>()) });
        tracing::warn!(error = %virt::error::Error::last_error(), "cannot register for domain events");
        let _ = conn.close();
        return;
    }
    (sink)(None);
    while !stopping.load(Ordering::SeqCst) && conn.is_alive().unwrap_or(false) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: `id` came from the registration on this connection.
    unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), id) };
    let _ = conn.close();
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _event: std::os::raw::c_int,
    _detail: std::os::raw::c_int,
    opaque: *mut std::os::raw::c_void,
) -> std::os::raw::c_int {
    // SAFETY: libvirt passes the domain the event is about (valid for the call) and our opaque.
    let name = unsafe { sys::virDomainGetName(dom) };
    if name.is_null() || opaque.is_null() {
        return 0;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned();
    let sink = unsafe { &*opaque.cast::<Arc<Sink>>() };
    // A panic must not unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (sink)(Some(name))));
    0
}

unsafe extern "C" fn sink_free(opaque: *mut std::os::raw::c_void) {
    if !opaque.is_null() {
        // SAFETY: `opaque` is the Box<Arc<Sink>> leaked at registration.
        drop(unsafe { Box::from_raw(opaque.cast::<Arc<Sink>>()) });
    }
}
