//! A network's DHCP leases, read with `virNetworkGetDHCPLeases` (the virt crate has no
//! binding for it).

use crate::error::NodeError;
use virt::network::Network;

/// The leases of `net` (named `name`) as `(mac, address)`, the MAC in lower case.
pub(super) fn dhcp_leases(net: &Network, name: &str) -> Result<Vec<(String, String)>, NodeError> {
    // The virt crate has no binding for virNetworkGetDHCPLeases; call libvirt directly.
    let mut leases: *mut virt::sys::virNetworkDHCPLeasePtr = std::ptr::null_mut();
    // SAFETY: `net` is a live network; libvirt allocates `leases` (n entries) and we
    // free each entry and the array exactly once, after copying the strings out.
    let n = unsafe { virt::sys::virNetworkGetDHCPLeases(net.as_ptr(), std::ptr::null(), &mut leases, 0) };
    if n < 0 {
        return Err(NodeError::from_virt("read DHCP leases of", "network", name, virt::error::Error::last_error()));
    }
    let text = |p: *mut std::os::raw::c_char| {
        if p.is_null() {
            String::new()
        } else {
            unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        unsafe {
            let lease = *leases.add(i);
            out.push((text((*lease).mac).to_ascii_lowercase(), text((*lease).ipaddr)));
            virt::sys::virNetworkDHCPLeaseFree(lease);
        }
    }
    if !leases.is_null() {
        unsafe { libc::free(leases.cast()) };
    }
    Ok(out)
}
