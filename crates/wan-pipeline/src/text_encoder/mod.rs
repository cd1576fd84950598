//! Text encoding: prompt cleaning, the T5 tokenizer and the UMT5 encoder.
