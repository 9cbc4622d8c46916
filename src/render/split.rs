//! Splitting long mrkdwn into sections Slack takes: at paragraphs, then lines, then hard cuts
//! that keep entities, links and code fences whole.

use super::*;

/// Splits mrkdwn into pieces of at most `max` chars: at paragraph boundaries when possible,
/// else at line boundaries, else hard cuts (not inside entities, preferably not inside links).
/// A code fence split between pieces is closed and reopened.
pub(super) fn split_sections(text: &str, max: usize) -> Vec<String> {
    const FENCE_ROOM: usize = 8;
    let budget = max - FENCE_ROOM;
    let mut packer = Packer {
        chunks: Vec::new(),
        cur: String::new(),
        cur_len: 0,
        budget,
    };
    for para in text.split("\n\n") {
        let len = para.chars().count();
        if packer.fits("\n\n", len) {
            packer.append("\n\n", para, len);
        } else if len <= budget {
            packer.flush();
            packer.append("", para, len);
        } else {
            for (i, line) in para.split('\n').enumerate() {
                packer.push_line(if i == 0 { "\n\n" } else { "\n" }, line);
            }
        }
    }
    packer.flush();

    // Close and reopen code fences cut between pieces.
    let mut out = Vec::new();
    let mut open = false;
    for chunk in packer.chunks {
        let mut piece = String::new();
        if open {
            piece.push_str("```\n");
        }
        for line in chunk.lines() {
            if line.trim_start_matches([' ', '>']).trim_end() == "```" {
                open = !open;
            }
        }
        piece.push_str(&chunk);
        if open {
            piece.push_str("\n```");
        }
        if !piece.trim().is_empty() {
            out.push(piece);
        }
    }
    out
}

struct Packer {
    chunks: Vec<String>,
    cur: String,
    cur_len: usize,
    budget: usize,
}

impl Packer {
    fn fits(&self, sep: &str, len: usize) -> bool {
        let sep_len = if self.cur.is_empty() { 0 } else { sep.len() };
        self.cur_len + sep_len + len <= self.budget
    }

    fn append(&mut self, sep: &str, piece: &str, len: usize) {
        if !self.cur.is_empty() {
            self.cur.push_str(sep);
            self.cur_len += sep.len();
        }
        self.cur.push_str(piece);
        self.cur_len += len;
    }

    fn flush(&mut self) {
        let chunk = std::mem::take(&mut self.cur);
        self.cur_len = 0;
        let chunk = chunk.trim_end_matches('\n');
        if !chunk.trim().is_empty() {
            self.chunks.push(chunk.to_owned());
        }
    }

    fn push_line(&mut self, sep: &str, line: &str) {
        let len = line.chars().count();
        if self.fits(sep, len) {
            self.append(sep, line, len);
            return;
        }
        self.flush();
        let mut rest = line;
        // Counted down, not recounted: a long line is cut thousands of times.
        let mut rest_len = len;
        while rest_len > self.budget {
            let (head, tail) = rest.split_at(hard_cut(rest, self.budget));
            self.chunks.push(head.to_owned());
            rest_len -= head.chars().count();
            rest = tail;
        }
        self.append("", rest, rest_len);
    }
}

/// Byte index at which to cut `s` so the head has at most `max` chars: preferably at a space,
/// never inside an entity, preferably not inside a `<…>` link. Always > 0.
pub(super) fn hard_cut(s: &str, max: usize) -> usize {
    let limit = byte_index_of_char(s, max);
    let mut end = limit;
    if let Some(sp) = s[..end].rfind(' ') {
        if s[..sp].chars().count() >= max / 2 {
            end = sp + 1;
        }
    }
    if let Some(lt) = s[..end].rfind('<') {
        if !s[lt..end].contains('>') {
            if lt > 0 {
                end = lt;
            } else if let Some(gt) = s[..limit].find('>') {
                // The piece starts with a link: keep it whole (links are far shorter than a
                // section, so its end is within the limit).
                end = gt + 1;
            }
        }
    }
    let safe = entity_safe(s, end);
    if safe > 0 {
        end = safe;
    }
    if end == 0 {
        end = entity_safe(s, limit).max(1);
        while !s.is_char_boundary(end) {
            end += 1;
        }
    }
    end
}
