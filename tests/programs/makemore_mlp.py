"""A character-level MLP language model of names (Bengio et al. 2003), as built in Karpathy's makemore
lectures (part 2, github.com/karpathy/makemore): embedding table C, one tanh layer, cross-entropy,
manual SGD on `p.data`, then sampling with torch.multinomial. Local data: `WORDS` is a list of names."""
import torch
import torch.nn.functional as F


def main(WORDS, steps=600):
    chars = sorted(list(set(''.join(WORDS))))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi['.'] = 0
    itos = {i: s for s, i in stoi.items()}
    vocab_size = len(itos)
    block_size = 3  # context length: how many characters do we take to predict the next one?

    def build_dataset(words):
        X, Y = [], []
        for w in words:
            context = [0] * block_size
            for ch in w + '.':
                ix = stoi[ch]
                X.append(context)
                Y.append(ix)
                context = context[1:] + [ix]  # crop and append
        X = torch.tensor(X)
        Y = torch.tensor(Y)
        return X, Y

    n1 = int(0.9 * len(WORDS))
    Xtr, Ytr = build_dataset(WORDS[:n1])
    Xdev, Ydev = build_dataset(WORDS[n1:])

    g = torch.Generator().manual_seed(2147483647)  # for reproducibility
    C = torch.randn((vocab_size, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g) * 0.2
    b1 = torch.randn(200, generator=g) * 0.01
    W2 = torch.randn((200, vocab_size), generator=g) * 0.01
    b2 = torch.randn(vocab_size, generator=g) * 0
    parameters = [C, W1, b1, W2, b2]
    print(sum(p.nelement() for p in parameters))  # number of parameters in total
    for p in parameters:
        p.requires_grad = True

    lossi = []
    for i in range(steps):
        # minibatch construct
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        # forward pass
        emb = C[Xtr[ix]]  # (32, 3, 10)
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)  # (32, 200)
        logits = h @ W2 + b2  # (32, 27)
        loss = F.cross_entropy(logits, Ytr[ix])
        # backward pass
        for p in parameters:
            p.grad = None
        loss.backward()
        # update
        lr = 0.1 if i < steps // 2 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.log10().item())

    @torch.no_grad()
    def split_loss(X, Y):
        emb = C[X]
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
        logits = h @ W2 + b2
        return F.cross_entropy(logits, Y).item()

    dev_loss = split_loss(Xdev, Ydev)
    print(f"dev loss {dev_loss:.4f}")

    g = torch.Generator().manual_seed(2147483647 + 10)
    samples = []
    for _ in range(5):
        out = []
        context = [0] * block_size
        while True:
            emb = C[torch.tensor([context])]
            h = torch.tanh(emb.view(1, -1) @ W1 + b1)
            logits = h @ W2 + b2
            probs = F.softmax(logits, dim=1)
            ix = torch.multinomial(probs, num_samples=1, generator=g).item()
            context = context[1:] + [ix]
            out.append(ix)
            if ix == 0 or len(out) > 20:
                break
        samples.append(''.join(itos[i] for i in out))
    print(samples)
    return {"losses": [10 ** l for l in lossi], "dev_loss": dev_loss, "samples": samples}
