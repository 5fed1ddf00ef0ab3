"""Publishing training outputs to a tunevault server: layouts, uploads, `tunevault push`."""
