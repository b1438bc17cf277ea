//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`).
