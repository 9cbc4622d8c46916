//! Errors in words for logs and messages: an error with its causes, each said once, and an
//! I/O error without the OS's error number. Used wherever an outbound connection's failure is
//! described (the Web API's client, the Socket Mode tunnel).

/// An error and its causes (`source()` chain), distinct messages joined with `": "`.
/// Callers pass errors whose texts carry no URL path, query or credentials.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = match e.downcast_ref::<std::io::Error>() {
            Some(io) => describe_io(io),
            None => e.to_string(),
        };
        // A wrapper often repeats its cause's text; say each thing once.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// An I/O error's text without the OS error number: `connection refused`.
pub fn describe_io(error: &std::io::Error) -> String {
    let text = error.to_string();
    match (error.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => {
            let mut chars = text[..at].chars();
            chars
                .next()
                .map(|first| first.to_lowercase().chain(chars).collect())
                .unwrap_or_default()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[test]
    fn error_chains_join_distinct_causes_and_drop_os_error_numbers() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        // ECONNREFUSED is 111 on Linux.
        #[cfg(target_os = "linux")]
        {
            let refused = std::io::Error::from_raw_os_error(111);
            let text = error_chain(&Outer(refused));
            assert_eq!(text, "tcp connect error: connection refused");
        }
        let same = std::io::Error::other("tcp connect error");
        assert_eq!(error_chain(&Outer(same)), "tcp connect error");
        let custom =
            std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid peer certificate");
        assert_eq!(describe_io(&custom), "invalid peer certificate");
    }
}
