//! A small incremental parser for Server-Sent Events (`text/event-stream`),
//! enough for the push stream: `data:` lines joined by `\n`, dispatched on
//! an empty line; comments (`:`) and other fields ignored.

/// Feed bytes in, take complete event payloads out.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

/// Longest line accepted; a longer one is dropped (protects memory).
const MAX_LINE: usize = 1 << 20;

impl SseParser {
    /// Adds bytes and returns the `data` of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if let Some(d) = self.data.take() {
                    out.push(d);
                }
            } else if let Some(v) = line.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(v);
                    }
                    None => self.data = Some(v.to_owned()),
                }
            }
        }
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_anywhere() {
        let stream = b": keepalive\n\ndata: {\"a\":1}\r\n\ndata: x\ndata: y\n\n";
        for cut in 0..stream.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&stream[..cut]);
            got.extend(p.push(&stream[cut..]));
            assert_eq!(
                got,
                vec!["{\"a\":1}".to_string(), "x\ny".to_string()],
                "cut {cut}"
            );
        }
    }
}
