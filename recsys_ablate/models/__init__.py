"""Models: the two-tower retrieval model, the ranking model and the in-batch softmax loss."""
