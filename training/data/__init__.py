"""Readers for the on-disk layouts AMPLIFY users have (LIBERO demos, AMPLIFY track files, text
embeddings), dataset selection strings, and the training dataset built from them."""
from training.data.dataset import AmplifyDataset, DataConfig
from training.data.selection import Selection, parse_selection

__all__ = ["AmplifyDataset", "DataConfig", "Selection", "parse_selection"]
