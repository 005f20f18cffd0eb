"""The one training loop, the batched full-ranking evaluation and the ranking metrics."""
