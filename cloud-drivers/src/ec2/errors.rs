//! EC2 error codes to [`CloudError`]: the controller decides from the variant alone.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::driver::CloudError;

/// The EC2 code of an instance ID that does not exist (any more).
pub(crate) const INSTANCE_NOT_FOUND: &str = "InvalidInstanceID.NotFound";
/// The EC2 code of a string that can never be an instance ID.
pub(crate) const INSTANCE_MALFORMED: &str = "InvalidInstanceID.Malformed";

/// Maps an EC2 error response to a [`CloudError`].
///
/// `code` is the EC2 error code (`InsufficientInstanceCapacity`), `status` the HTTP
/// status, `message` the cloud's text and `instance_type` the type the call was
/// about (for [`CloudError::InsufficientCapacity`]; empty when none). Codes win over
/// statuses: EC2 sends `RequestLimitExceeded` with HTTP 503, and that is throttling,
/// not an outage. Unknown codes are retried (Transient) unless they name an invalid
/// parameter, so a new EC2 code never stalls a pool for good.
pub fn classify(
    code: Option<&str>,
    status: Option<u16>,
    message: &str,
    instance_type: &str,
) -> CloudError {
    let code = code.unwrap_or("").trim();
    let text = match (code.is_empty(), message.is_empty()) {
        (true, true) => match status {
            Some(s) => format!("HTTP {s}"),
            None => "no error code".to_string(),
        },
        (true, false) => message.to_string(),
        (false, true) => code.to_string(),
        (false, false) => format!("{code}: {message}"),
    };
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientCapacityOnHost" => CloudError::InsufficientCapacity {
            instance_type: instance_type.to_string(),
            message: text,
        },
        // A full subnet does not get better by trying another instance type either.
        "InstanceLimitExceeded"
        | "VcpuLimitExceeded"
        | "MaxSpotInstanceCountExceeded"
        | "InsufficientFreeAddressesInSubnet" => CloudError::QuotaExceeded(text),
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            CloudError::Throttled {
                message: text,
                retry_after: None,
            }
        }
        "AuthFailure"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "OptInRequired"
        | "ExpiredToken"
        | "Blocked" => CloudError::Unauthorized(text),
        INSTANCE_NOT_FOUND => CloudError::NotFound(text),
        "InvalidParameterValue"
        | "InvalidParameter"
        | "InvalidParameterCombination"
        | "MissingParameter"
        | "InvalidInstanceType"
        | "Unsupported"
        | "UnsupportedOperation"
        | "InvalidUserData.Malformed"
        | "InvalidBlockDeviceMapping"
        | INSTANCE_MALFORMED => CloudError::Invalid(text),
        c if c.starts_with("InvalidAMIID.")
            || c.starts_with("InvalidSubnetID.")
            || c.starts_with("InvalidGroup.")
            || c.starts_with("InvalidKeyPair.") =>
        {
            CloudError::Invalid(text)
        }
        _ => match status {
            Some(429) => CloudError::Throttled {
                message: text,
                retry_after: None,
            },
            Some(401 | 403) => CloudError::Unauthorized(text),
            Some(400..=499) if code.starts_with("Invalid") => CloudError::Invalid(text),
            _ => CloudError::Transient(text),
        },
    }
}

/// Maps any SDK error: service errors by [`classify`], everything on the way there
/// (timeouts, connection failures, unreadable responses) as Transient.
pub(crate) fn from_sdk<E>(err: SdkError<E, HttpResponse>, instance_type: &str) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(ctx) => classify(
            err.code(),
            Some(ctx.raw().status().as_u16()),
            err.message().unwrap_or(""),
            instance_type,
        ),
        SdkError::ConstructionFailure(_) => CloudError::Invalid(format!(
            "EC2 request could not be built: {}",
            DisplayErrorContext(&err)
        )),
        SdkError::TimeoutError(_) => CloudError::Transient("EC2 call timed out".to_string()),
        SdkError::DispatchFailure(_) => {
            CloudError::Transient(format!("EC2 unreachable: {}", DisplayErrorContext(&err)))
        }
        SdkError::ResponseError(ctx) => CloudError::Transient(format!(
            "unreadable EC2 response (HTTP {}): {}",
            ctx.raw().status().as_u16(),
            DisplayErrorContext(&err)
        )),
        _ => CloudError::Transient(format!("EC2 call failed: {}", DisplayErrorContext(&err))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(code: &str, status: u16) -> &'static str {
        classify(Some(code), Some(status), "msg", "g4dn.xlarge").label()
    }

    #[test]
    fn codes_map_to_variants() {
        for (code, status, want) in [
            ("InsufficientInstanceCapacity", 500, "InsufficientCapacity"),
            ("InsufficientHostCapacity", 500, "InsufficientCapacity"),
            ("InstanceLimitExceeded", 400, "QuotaExceeded"),
            ("VcpuLimitExceeded", 400, "QuotaExceeded"),
            ("MaxSpotInstanceCountExceeded", 400, "QuotaExceeded"),
            ("RequestLimitExceeded", 503, "Throttled"),
            ("Throttling", 400, "Throttled"),
            ("ThrottlingException", 400, "Throttled"),
            ("AuthFailure", 401, "Unauthorized"),
            ("UnauthorizedOperation", 403, "Unauthorized"),
            ("InvalidClientTokenId", 403, "Unauthorized"),
            ("SignatureDoesNotMatch", 403, "Unauthorized"),
            ("OptInRequired", 401, "Unauthorized"),
            ("InvalidParameterValue", 400, "Invalid"),
            ("InvalidAMIID.NotFound", 400, "Invalid"),
            ("InvalidAMIID.Malformed", 400, "Invalid"),
            ("InvalidSubnetID.NotFound", 400, "Invalid"),
            ("InvalidGroup.NotFound", 400, "Invalid"),
            ("InvalidKeyPair.NotFound", 400, "Invalid"),
            ("Unsupported", 400, "Invalid"),
            ("InvalidInstanceType", 400, "Invalid"),
            ("InvalidInstanceID.NotFound", 400, "NotFound"),
            ("InvalidInstanceID.Malformed", 400, "Invalid"),
            ("InternalError", 500, "Transient"),
            ("Unavailable", 503, "Transient"),
            ("SomethingNew", 400, "Transient"),
            ("InvalidSomethingNew", 400, "Invalid"),
        ] {
            assert_eq!(label(code, status), want, "{code}");
        }
    }

    #[test]
    fn statuses_without_codes() {
        assert_eq!(classify(None, Some(503), "", "").label(), "Transient");
        assert_eq!(classify(None, Some(500), "", "").label(), "Transient");
        assert_eq!(classify(None, Some(429), "", "").label(), "Throttled");
        assert_eq!(classify(None, Some(403), "", "").label(), "Unauthorized");
        assert_eq!(classify(None, None, "", "").label(), "Transient");
        assert_eq!(
            classify(None, Some(502), "", ""),
            CloudError::Transient("HTTP 502".into())
        );
    }

    #[test]
    fn messages_and_instance_type_are_kept() {
        assert_eq!(
            classify(
                Some("InsufficientInstanceCapacity"),
                Some(500),
                "We currently do not have sufficient p4d.24xlarge capacity",
                "p4d.24xlarge"
            ),
            CloudError::InsufficientCapacity {
                instance_type: "p4d.24xlarge".into(),
                message: "InsufficientInstanceCapacity: We currently do not have sufficient \
                          p4d.24xlarge capacity"
                    .into(),
            }
        );
        assert_eq!(
            classify(Some("RequestLimitExceeded"), Some(503), "", ""),
            CloudError::Throttled {
                message: "RequestLimitExceeded".into(),
                retry_after: None
            }
        );
    }
}
