//! A domain's serial console over a libvirt stream.

use super::conn::Conn;
use super::Console;
use crate::error::NodeError;
use virt::stream::Stream;

/// A domain's serial console: a non-blocking libvirt stream on a connection of its own.
/// Not thread-safe by design: one thread owns it and both reads and writes.
pub struct ConsoleStream {
    pub(super) stream: Stream,
    pub(super) _conn: Conn,
}

// SAFETY: libvirt streams and connections may be used from any thread, one at a time; the
// owner moves it to the thread that bridges it and uses it only there.
unsafe impl Send for ConsoleStream {}

impl Console for ConsoleStream {
    fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>, NodeError> {
        // SAFETY: the stream is live and `buf` is writable for its length.
        let n = unsafe { virt::sys::virStreamRecv(self.stream.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            -2 => Ok(None),
            n if n < 0 => Err(NodeError::from_virt("read the console of", "domain", "(console)", virt::error::Error::last_error())),
            n => Ok(Some(n as usize)),
        }
    }

    fn send(&self, mut data: &[u8]) -> Result<(), NodeError> {
        while !data.is_empty() {
            // SAFETY: the stream is live and `data` is readable for its length.
            let n = unsafe {
                virt::sys::virStreamSend(self.stream.as_ptr(), data.as_ptr().cast::<std::os::raw::c_char>().cast_mut(), data.len())
            };
            match n {
                -2 => std::thread::sleep(std::time::Duration::from_millis(5)),
                n if n < 0 => {
                    return Err(NodeError::from_virt("write to the console of", "domain", "(console)", virt::error::Error::last_error()))
                }
                n => data = &data[n as usize..],
            }
        }
        Ok(())
    }
}

impl Drop for ConsoleStream {
    fn drop(&mut self) {
        // SAFETY: the stream is live; aborting ends the console session for the guest.
        unsafe { virt::sys::virStreamAbort(self.stream.as_ptr()) };
    }
}
