//! The end user's address, for the per-address login limit and the
//! login audit records.

use std::net::IpAddr;

use tonic::Request;

use crate::config::ThrottleSettings;

#[derive(Debug, Clone)]
pub(super) struct ClientAddress {
    source: Source,
}

#[derive(Debug, Clone)]
struct Source {
    /// The metadata header the proxies append the address they saw to.
    header: Option<String>,
    /// How many proxies in front of the service append to it.
    trusted_proxies: usize,
}

impl ClientAddress {
    pub(super) fn new(settings: &ThrottleSettings) -> Self {
        let source = Source {
            header: settings.address_header.clone(),
            trusted_proxies: usize::from(settings.trusted_proxies),
        };
        Self { source }
    }

    /// The N-th entry from the right of the trusted header, N being the
    /// proxies in front of the service (each appends the address it saw;
    /// entries further left were written by the client). With fewer entries
    /// the call did not come through the proxies: the peer address counts.
    pub(super) fn of<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        let source = &self.source;
        let forwarded = source.header.as_deref().and_then(|header| {
            let entries: Vec<&str> = request
                .metadata()
                .get_all(header)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .collect();
            entries
                .len()
                .checked_sub(source.trusted_proxies)
                .and_then(|index| entries.get(index))
                // Only a real IP address becomes a counter key: bounded, canonical.
                .and_then(|address| address.trim().parse::<IpAddr>().ok())
        });
        forwarded.or_else(|| request.remote_addr().map(|peer| peer.ip()))
    }
}
