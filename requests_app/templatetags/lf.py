from django import template

register = template.Library()


@register.filter
def bytes(value) -> str:  # noqa: A001 - template filter name
    """1536 → '1.5 KB' (binary multiples, as mail administrators read sizes)."""
    try:
        size = float(value or 0)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""
