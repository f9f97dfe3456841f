"""``velollm report``: results (files or history ids) as one offline HTML page, or CSV, markdown, JSONL."""
