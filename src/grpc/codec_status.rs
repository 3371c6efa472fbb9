//! Statuses that tonic's codec produces before a handler runs, brought in
//! line with the rest of the API: an over-size request is RESOURCE_EXHAUSTED
//! (the gRPC convention; tonic says OUT_OF_RANGE) and bytes that are not the
//! method's protobuf message are the caller's fault, INVALID_ARGUMENT (tonic
//! says INTERNAL, which we keep for our own bugs).

use http::HeaderMap;
use tonic::{Code, Status};

const TOO_LARGE: &str = "Error, decoded message length too large: ";
const UNDECODABLE: &str = "failed to decode Protobuf message";

/// Rewrites a trailers-only error response's status in place.
pub(super) fn normalize(headers: &mut HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let replacement = match status.code() {
        Code::OutOfRange if status.message().starts_with(TOO_LARGE) => {
            Status::resource_exhausted(format!(
                "request message too large: {}",
                &status.message()[TOO_LARGE.len()..]
            ))
        }
        Code::Internal if status.message().starts_with(UNDECODABLE) => {
            Status::invalid_argument("the request is not a valid protobuf message for this method")
        }
        _ => return,
    };
    headers.remove(Status::GRPC_MESSAGE);
    headers.remove(Status::GRPC_STATUS_DETAILS);
    if replacement.add_header(headers).is_err() {
        // Cannot happen for these ASCII messages; keep tonic's status then.
        let _ = status.add_header(headers);
    }
}

/// Rewrites an error response's status to CANCELLED: the client went away
/// mid-request (nobody reads it; the log and metrics do).
pub(super) fn cancelled(headers: &mut HeaderMap) {
    headers.remove(Status::GRPC_MESSAGE);
    headers.remove(Status::GRPC_STATUS_DETAILS);
    let _ = Status::cancelled("the client went away mid-request").add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(status: Status) -> Option<Status> {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).ok()?;
        normalize(&mut headers);
        Status::from_header_map(&headers)
    }

    #[test]
    fn oversize_becomes_resource_exhausted() {
        let status = rewritten(Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 65536 bytes",
        ));
        assert_eq!(
            status.as_ref().map(Status::code),
            Some(Code::ResourceExhausted)
        );
        assert_eq!(
            status.as_ref().map(Status::message),
            Some("request message too large: found 5000000 bytes, the limit is: 65536 bytes")
        );
    }

    #[test]
    fn undecodable_becomes_invalid_argument_and_our_internal_stays() {
        let status = rewritten(Status::internal(
            "failed to decode Protobuf message: invalid tag",
        ));
        assert_eq!(status.map(|s| s.code()), Some(Code::InvalidArgument));
        let ours = rewritten(Status::internal("internal error"));
        assert_eq!(ours.map(|s| s.code()), Some(Code::Internal));
    }
}
