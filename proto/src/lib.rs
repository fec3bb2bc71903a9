//! OpenModel's protocol definitions (being written: see issue 3).
