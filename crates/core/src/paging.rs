//! AWS-style list paging (`maxResults` and an opaque `nextToken`) over a list read whole: the
//! control-plane lists (guardrails, prompts) are small.

use modelgate_types::Error;

/// A checked page request.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    offset: usize,
    max: usize,
}

impl Paging {
    /// Check `maxResults` (1–1000, `default` when absent) and a `nextToken` this gateway gave.
    pub fn parse(max: Option<usize>, next: Option<&str>, default: usize) -> Result<Self, Error> {
        let max = max.unwrap_or(default);
        if !(1..=1000).contains(&max) {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{max}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 1000"
            )));
        }
        let offset = match next {
            Some(t) => t
                .parse::<usize>()
                .map_err(|_| Error::validation("The nextToken is not one this gateway gave."))?,
            None => 0,
        };
        Ok(Self { offset, max })
    }

    /// This page of `all`, and the token of the next one when there is more.
    pub fn apply<T>(self, all: Vec<T>) -> (Vec<T>, Option<String>) {
        let more = self.offset + self.max < all.len();
        let page = all.into_iter().skip(self.offset).take(self.max).collect();
        (page, more.then(|| (self.offset + self.max).to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_tokens() {
        let p = Paging::parse(Some(2), None, 10).unwrap();
        let (page, next) = p.apply(vec![1, 2, 3]);
        assert_eq!((page, next.as_deref()), (vec![1, 2], Some("2")));
        let (page, next) = Paging::parse(Some(2), Some("2"), 10)
            .unwrap()
            .apply(vec![1, 2, 3]);
        assert_eq!((page, next), (vec![3], None));
        assert!(Paging::parse(Some(0), None, 10).is_err());
        assert!(Paging::parse(None, Some("x"), 10).is_err());
    }
}
