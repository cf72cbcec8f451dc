//! `LibvirtNode`'s networks: the bodies of the `Node` trait's network calls (the trait's
//! impl in `libvirt.rs` hands them here) and reserving a network's addresses ahead.

use super::conn::LibvirtNode;
use super::ObjectState;
use crate::error::NodeError;
use crate::xml;
use virt::network::Network;

/// What [`LibvirtNode::network_reserve_ahead`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveAhead {
    /// Nothing to do: already as asked, or the network's range cannot be reserved ahead.
    Unchanged,
    /// The definition changed and the network was restarted (no guest was connected).
    Live,
    /// The definition changed; the running network has it at its next start (guests were
    /// connected to it, and a restart would cut them off).
    NextStart { connections: u32 },
}

impl LibvirtNode {
    /// Adds (`add`) or takes out the addresses reserved ahead (ADR 0015) in the persistent
    /// definition of network `name`. A network that is active with no guest connected is
    /// restarted so that the change is live at once; one with guests keeps running as it is.
    pub fn network_reserve_ahead(&self, name: &str, add: bool) -> Result<ReserveAhead, NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "network", name, e);
            let net = Self::network(c, name)?;
            let inactive = net.get_xml_desc(virt::sys::VIR_NETWORK_XML_INACTIVE).map_err(err("read XML of"))?;
            let changed = if add { xml::network_reserve_ahead(&inactive)? } else { xml::network_unreserve_ahead(&inactive)? };
            let active = net.is_active().map_err(err("read state of"))?;
            let live = if active { net.get_xml_desc(0).map_err(err("read XML of"))? } else { inactive.clone() };
            let live_as_asked = if add { xml::network_reserved_ahead(&live) != Some(false) } else { !xml::network_has_premade(&live) };
            if changed.is_none() && live_as_asked {
                return Ok(ReserveAhead::Unchanged);
            }
            let net = match changed {
                Some(x) => Network::define_xml(c, &x).map_err(err("define"))?,
                None => net,
            };
            if !active {
                return Ok(ReserveAhead::Live);
            }
            let connections = xml::network_connections(&live);
            if connections > 0 {
                return Ok(ReserveAhead::NextStart { connections });
            }
            net.destroy().map_err(err("stop"))?;
            net.create().map_err(err("start"))?;
            Ok(ReserveAhead::Live)
        })
    }

    pub(super) fn network_xml(&self, name: &str) -> Result<String, NodeError> {
        self.with_conn(|c| {
            let net = Self::network(c, name)?;
            net.get_xml_desc(0).map_err(|e| NodeError::from_virt("read XML of", "network", name, e))
        })
    }

    pub(super) fn network_dhcp_host(&self, name: &str, host_xml: &str, add: bool) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let net = Self::network(c, name)?;
            let cmd = if add { virt::sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST } else { virt::sys::VIR_NETWORK_UPDATE_COMMAND_DELETE };
            let mut flags = virt::sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG;
            if net.is_active().unwrap_or(false) {
                flags |= virt::sys::VIR_NETWORK_UPDATE_AFFECT_LIVE;
            }
            net.update(cmd, virt::sys::VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml, flags).map_err(|e| {
                // libvirt reports a clash with another entry, and a missing entry, as an
                // invalid operation; only its message tells them from other refusals.
                let invalid = e.code() == virt::error::ErrorNumber::OperationInvalid;
                if invalid && add && e.message().contains("existing dhcp host entry") {
                    NodeError::AlreadyExists { kind: "DHCP host entry for that address or name in network", name: name.to_owned() }
                } else if invalid && !add && e.message().contains("couldn't locate") {
                    NodeError::NotFound { kind: "DHCP host entry in network", name: name.to_owned() }
                } else {
                    NodeError::from_virt(if add { "add a DHCP host to" } else { "remove a DHCP host from" }, "network", name, e)
                }
            })
        })
    }

    pub(super) fn network_leases(&self, name: &str) -> Result<Vec<(String, String)>, NodeError> {
        self.with_conn(|c| {
            let net = Self::network(c, name)?;
            super::leases::dhcp_leases(&net, name)
        })
    }

    pub(super) fn network_state(&self, name: &str) -> Result<Option<ObjectState>, NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "network", name, e);
            let n = match Network::lookup_by_name(c, name) {
                Ok(n) => n,
                Err(e) if e.code() == virt::error::ErrorNumber::NoNetwork => return Ok(None),
                Err(e) => return Err(err("find")(e)),
            };
            Ok(Some(ObjectState {
                active: n.is_active().map_err(err("read state of"))?,
                autostart: n.get_autostart().map_err(err("read autostart of"))?,
                persistent: n.is_persistent().map_err(err("read persistence of"))?,
            }))
        })
    }

    pub(super) fn network_ensure(&self, name: &str, xml: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "network", name, e);
            let n = match Network::lookup_by_name(c, name) {
                Ok(n) => n,
                Err(e) if e.code() == virt::error::ErrorNumber::NoNetwork => Network::define_xml(c, xml).map_err(err("define"))?,
                Err(e) => return Err(err("find")(e)),
            };
            // A transient network of that name (left active in /run by a libvirtd that lost
            // its configuration, say) is made persistent as it is, so it can autostart.
            let n = if n.is_persistent().map_err(err("read persistence of"))? {
                n
            } else {
                let current = n.get_xml_desc(0).map_err(err("read"))?;
                Network::define_xml(c, &current).map_err(err("define"))?
            };
            if !n.is_active().map_err(err("read state of"))? {
                n.create().map_err(err("start"))?;
            }
            if !n.get_autostart().map_err(err("read autostart of"))? {
                n.set_autostart(true).map_err(err("set autostart of"))?;
            }
            Ok(())
        })
    }

    pub(super) fn network_delete(&self, name: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "network", name, e);
            let n = Network::lookup_by_name(c, name).map_err(err("find"))?;
            if n.is_active().map_err(err("read state of"))? {
                n.destroy().map_err(err("stop"))?;
            }
            n.undefine().map_err(err("undefine"))
        })
    }

    pub(super) fn network_set(&self, name: &str, active: Option<bool>, autostart: Option<bool>) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "network", name, e);
            let n = Network::lookup_by_name(c, name).map_err(err("find"))?;
            let is_active = n.is_active().map_err(err("read state of"))?;
            match active {
                Some(true) if !is_active => drop(n.create().map_err(err("start"))?),
                Some(false) if is_active => n.destroy().map_err(err("stop"))?,
                _ => {}
            }
            if let Some(a) = autostart {
                n.set_autostart(a).map_err(err("set autostart of"))?;
            }
            Ok(())
        })
    }

    pub(super) fn network_list(&self) -> Result<Vec<String>, NodeError> {
        self.with_conn(|c| {
            let nets = c.list_all_networks(0).map_err(|e| NodeError::from_virt("list", "networks", &self.uri, e))?;
            let mut names: Vec<String> = nets.iter().filter_map(|n| n.get_name().ok()).collect();
            names.sort();
            Ok(names)
        })
    }
}
