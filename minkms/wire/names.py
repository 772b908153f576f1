"""
The strict name and tag rules, checked before a request becomes a logged
command (see L{minkms.names}).
"""

from minkms.names import KINDS, MAX_NAME, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS, validate_name, validate_tags

__all__ = ["KINDS", "MAX_NAME", "MAX_TAGS", "MAX_TAG_KEY", "MAX_TAG_VALUE", "validate_name", "validate_tags"]
