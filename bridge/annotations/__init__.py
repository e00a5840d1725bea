"""Annotations of de-identified series: masks in, review, agreement."""
