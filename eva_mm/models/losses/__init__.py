from .federated_loss import FederatedLoss, load_lvis_image_counts

__all__ = ['FederatedLoss', 'load_lvis_image_counts']
