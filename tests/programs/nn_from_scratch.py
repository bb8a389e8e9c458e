"""Logistic regression on digits, first from raw tensors and then refactored step by step into nn.Module,
nn.Linear, optim, Dataset and DataLoader — the path of the PyTorch tutorial "What is torch.nn really?"
(pytorch.org/tutorials/beginner/nn_tutorial.html). Local data: `DATA` holds flattened 28x28 digits."""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset


def main(DATA, epochs=2):
    torch.manual_seed(0)
    x_train, y_train, x_valid, y_valid = map(torch.tensor, (DATA["x_train"], DATA["y_train"], DATA["x_test"], DATA["y_test"]))
    x_train, x_valid = x_train.reshape(-1, 784), x_valid.reshape(-1, 784)
    n, c = x_train.shape
    bs, lr = 64, 0.5

    # 1. From scratch: weights, a hand-written log-softmax and negative log-likelihood
    weights = torch.randn(784, 10) / math.sqrt(784)
    weights.requires_grad_()
    bias = torch.zeros(10, requires_grad=True)

    def log_softmax(x):
        return x - x.exp().sum(-1).log().unsqueeze(-1)

    def model(xb):
        return log_softmax(xb @ weights + bias)

    def nll(input, target):
        return -input[range(target.shape[0]), target].mean()

    loss_func = nll

    def accuracy(out, yb):
        preds = torch.argmax(out, dim=1)
        return (preds == yb).float().mean()

    scratch_losses = []
    for epoch in range(epochs):
        for i in range((n - 1) // bs + 1):
            start_i = i * bs
            end_i = start_i + bs
            xb = x_train[start_i:end_i]
            yb = y_train[start_i:end_i]
            pred = model(xb)
            loss = loss_func(pred, yb)
            loss.backward()
            with torch.no_grad():
                weights -= weights.grad * lr
                bias -= bias.grad * lr
                weights.grad.zero_()
                bias.grad.zero_()
            scratch_losses.append(loss.item())
    scratch_accuracy = accuracy(model(x_valid), y_valid).item()
    print(f"from scratch: loss {scratch_losses[-1]:.4f}, accuracy {scratch_accuracy:.3f}")

    # 2. Refactored: nn.Module, nn.Linear, optim.SGD, TensorDataset, DataLoader, validation in eval mode
    class Mnist_Logistic(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 10)

        def forward(self, xb):
            return self.lin(xb)

    def get_data(train_ds, valid_ds, bs):
        return (DataLoader(train_ds, batch_size=bs, shuffle=True), DataLoader(valid_ds, batch_size=bs * 2))

    def get_model():
        model = Mnist_Logistic()
        return model, optim.SGD(model.parameters(), lr=lr)

    def loss_batch(model, loss_func, xb, yb, opt=None):
        loss = loss_func(model(xb), yb)
        if opt is not None:
            loss.backward()
            opt.step()
            opt.zero_grad()
        return loss.item(), len(xb)

    def fit(epochs, model, loss_func, opt, train_dl, valid_dl):
        valid_losses = []
        for epoch in range(epochs):
            model.train()
            for xb, yb in train_dl:
                loss_batch(model, loss_func, xb, yb, opt)
            model.eval()
            with torch.no_grad():
                losses, nums = zip(*[loss_batch(model, loss_func, xb, yb) for xb, yb in valid_dl])
            val_loss = np.sum(np.multiply(losses, nums)) / np.sum(nums)
            print(epoch, val_loss)
            valid_losses.append(val_loss)
        return valid_losses

    train_dl, valid_dl = get_data(TensorDataset(x_train, y_train), TensorDataset(x_valid, y_valid), bs)
    model, opt = get_model()
    first = F.cross_entropy(model(x_valid), y_valid).item()
    valid_losses = fit(epochs, model, F.cross_entropy, opt, train_dl, valid_dl)
    return {"losses": scratch_losses, "accuracy": [scratch_accuracy], "valid_losses": [first] + valid_losses}
