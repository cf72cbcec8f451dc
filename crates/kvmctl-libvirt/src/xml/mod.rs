//! The libvirt XML documents kvmctl writes and reads, one module per object: builders
//! (`domain_xml`, `volume_xml`, `nat_network_xml`, ...) and the parsers that read libvirt's
//! answers back (`metadata_parse`, `domain_type_of`, `network_info`, `network_dhcp_info`).
//! Nothing in kvmctl reads libvirt XML any other way.
//!
//! Every element and attribute goes through quick-xml's writer, which escapes text and
//! attribute values; no user string is ever pasted into XML. Output is deterministic (same
//! spec, same bytes) so that golden files can pin it.

mod domain;
mod domain_read;
mod metadata;
mod network;
mod reserve;
mod storage;
#[cfg(test)]
mod tests;

pub use domain::*;
pub use domain_read::*;
pub use metadata::*;
pub use network::*;
pub use reserve::*;
pub use storage::*;

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("{field} is not valid UTF-8 or contains a NUL byte: {value:?}")]
    BadText { field: &'static str, value: String },
    #[error("writing XML")]
    Io(#[from] std::io::Error),
    #[error("reading XML: {0}")]
    Parse(String),
}

/// A small wrapper that keeps element nesting readable and every string escaped.
pub(crate) struct Doc {
    w: Writer<Vec<u8>>,
}

impl Doc {
    pub(crate) fn new() -> Self {
        Doc { w: Writer::new_with_indent(Vec::new(), b' ', 2) }
    }

    pub(crate) fn open(&mut self, tag: &str, attrs: &[(&str, &str)]) -> Result<(), XmlError> {
        let start = BytesStart::new(tag).with_attributes(attrs.iter().copied());
        self.w.write_event(Event::Start(start))?;
        Ok(())
    }

    pub(crate) fn close(&mut self, tag: &str) -> Result<(), XmlError> {
        self.w.write_event(Event::End(BytesEnd::new(tag)))?;
        Ok(())
    }

    pub(crate) fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) -> Result<(), XmlError> {
        let start = BytesStart::new(tag).with_attributes(attrs.iter().copied());
        self.w.write_event(Event::Empty(start))?;
        Ok(())
    }

    pub(crate) fn text(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) -> Result<(), XmlError> {
        self.open(tag, attrs)?;
        self.w.write_event(Event::Text(BytesText::new(text)))?;
        self.close(tag)
    }

    pub(crate) fn finish(self) -> String {
        let mut s = String::from_utf8(self.w.into_inner()).expect("writer only receives &str");
        s.push('\n');
        s
    }
}

pub(crate) fn path_str(field: &'static str, p: &std::path::Path) -> Result<String, XmlError> {
    let s = p.to_str().ok_or_else(|| XmlError::BadText { field, value: p.to_string_lossy().into_owned() })?;
    checked(field, s)
}

/// XML 1.0 cannot carry NUL or most control characters, escaped or not.
pub(crate) fn checked(field: &'static str, s: &str) -> Result<String, XmlError> {
    if s.chars().any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(XmlError::BadText { field, value: s.to_owned() });
    }
    Ok(s.to_owned())
}
