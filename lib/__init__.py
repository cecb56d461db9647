"""How transformers learn structured data: the library behind the book."""
