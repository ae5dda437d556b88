"""Watch the BatchNorm layers of your own ResNet while it trains, then look at them in bnviz.

    python examples/watch_resnet.py                       # ~300 steps, well under a minute on 2 CPU cores
    python examples/watch_resnet.py --fault frozen-bn     # plant a fault, see `bnviz doctor` find it
    bnviz app --runs runs                                 # then open "Your runs"
    bnviz doctor runs/resnet-example

Everything bnviz-specific is three lines in main(): `bnviz.watch(...)`, `w.step(...)` once per
optimizer step, and closing the watch (the `with` block). The rest is an ordinary PyTorch script:
copy it, swap in your model and data loader, keep those three lines.

No download and no torchvision: the ResNet is written out below (torchvision's layout and module
names, so the layer names you see in bnviz are the ones you would see with torchvision's
resnet18), and the images are generated from a seed.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bnviz


# ----------------------------------------------------------------------------------------------
# The model: torchvision's ResNet, in its CIFAR form (3x3 stem, no max-pool) for 32x32 inputs.

def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the BatchNorm that follows subtracts the mean, which would cancel it.
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, add the shortcut, ReLU: torchvision's BasicBlock, same names."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)   # shared, as in torchvision: used after bn1 and after the addition
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            # The shortcut must match the new shape: a strided 1x1 convolution and its own BN.
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity                     # in place, as torchvision: bnviz copies what it records
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], widths: tuple[int, ...], num_classes: int = 10):
        super().__init__()
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2          # each stage after the first halves the resolution
            stage = [BasicBlock(cin, width, stride)] + [BasicBlock(width, width) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            cin = width
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):         # torchvision's initialisation
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(blocks: tuple[int, ...] = (2, 2, 2, 2), widths: tuple[int, ...] = (64, 128, 256, 512),
           num_classes: int = 10) -> ResNet:
    """The defaults are ResNet-18 (11.2 M parameters, 20 BatchNorm layers) for 32x32 inputs."""
    return ResNet(tuple(blocks), tuple(widths), num_classes)


# ----------------------------------------------------------------------------------------------
# The data: oriented gratings. The class is the orientation (10 classes, 18 degrees apart);
# frequency, phase, colour and contrast are random and there is pixel noise, so the net has to
# learn orientation-selective filters rather than read off a colour. Made by torch from a seed.

def gratings(n: int, seed: int, classes: int = 10, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    angle = y.float() * math.pi / classes + (torch.rand(n, generator=g) - 0.5) * math.radians(6)
    cycles = 2 + 3 * torch.rand(n, generator=g)                    # 2-5 stripes across the image
    phase = 2 * math.pi * torch.rand(n, generator=g)
    r = torch.linspace(-0.5, 0.5, size)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    along = xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None]
    wave = torch.sin(2 * math.pi * cycles[:, None, None] * along + phase[:, None, None])   # (n, size, size)
    colour = torch.rand(n, 3, generator=g) * 2 - 1                  # a random RGB direction per image
    contrast = 0.5 + 0.5 * torch.rand(n, generator=g)
    x = contrast[:, None, None, None] * colour[:, :, None, None] * wave[:, None]
    x = x + 0.3 * torch.randn(n, 3, size, size, generator=g)
    return x, y


# ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    p.add_argument("--every", type=int, default=20, help="record every N steps (default 20)")
    p.add_argument("--run-dir", default="runs/resnet-example", help="where the run is written")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    p.add_argument("--fault", default="none", choices=["none", "frozen-bn", "keras-momentum", "tiny-batch"],
                   help="plant a common BatchNorm mistake (see the comments in the script)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 or args.every < 1 or args.batch_size < 1:
        p.error("--steps, --every and --batch-size must be at least 1")

    torch.manual_seed(args.seed)                   # the weights' initialisation
    x_train, y_train = gratings(8192, seed=args.seed + 1)
    x_val, y_val = gratings(256, seed=args.seed + 2)   # held out: bnviz scores it in eval mode
    model = resnet(blocks=(1, 1, 1), widths=(16, 32, 64))
    batch_size = args.batch_size

    # The faults: mistakes people make in real code. The first two leave the signature
    # `bnviz doctor` looks for; the third shows where its checks stop.
    if args.fault == "frozen-bn":
        # Fine-tuning with "frozen" BN: gamma/beta get requires_grad=False, but the model stays in
        # train() mode, so BN still normalizes with batch statistics and its running statistics
        # keep moving. The doctor reports "frozen_but_moving".
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
    elif args.fault == "keras-momentum":
        # Keras' momentum (0.99 = weight of the OLD running value) typed into PyTorch, where
        # momentum is the weight of the NEW batch: the running statistics become the last
        # batch's. The doctor reports "momentum".
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.99
    elif args.fault == "tiny-batch":
        # Two images a batch: each batch statistic is estimated from 2 images (their pixels are
        # far from independent samples), the regime where BN is known to degrade (Wu & He 2018).
        # N x H x W is still 128 or more values per channel here; the doctor's "few values" check
        # looks at the batch size too and warns on every BN layer. In the app, compare how much
        # the batch statistics jump from step to step.
        batch_size = 2

    # A DataLoader over in-memory tensors, shuffled by its own seeded generator: the usual loop.
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed + 3))
    params = [q for q in model.parameters() if q.requires_grad]      # frozen ones are left out, as in fine-tuning
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps)

    # bnviz: watch the model. It finds every norm layer by type (here 9 BatchNorm2d), and at
    # steps 0, every, 2*every, ... records their batch and running statistics and the
    # distributions around them. holdout=(x, y) adds, at those steps, the held-out loss and
    # accuracy in eval mode, with and without BN's running statistics recomputed.
    started = time.perf_counter()
    model.train()
    step = 0
    with bnviz.watch(model, args.run_dir, every=args.every, holdout=(x_val, y_val), overwrite=args.overwrite) as w:
        while step < args.steps:
            for xb, yb in loader:
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                lr = opt.param_groups[0]["lr"]           # the rate this step uses (the schedule moves it next)
                opt.step()
                sched.step()
                # bnviz: once per optimizer step, after it, with whatever numbers you want kept.
                w.step(loss=loss.item(), acc=(logits.argmax(1) == yb).float().mean().item(), lr=lr)
                step += 1
                if step % 50 == 0 or step == args.steps:
                    print(f"step {step:4d}  loss {loss.item():.3f}  ({time.perf_counter() - started:.0f} s)", flush=True)
                if step == args.steps:
                    break
    # Leaving the `with` block closed the watch and marked the run finished (or failed, on an
    # exception): everything is already on disk, committed as training went.

    run = bnviz.open_run(args.run_dir)
    _, holdout_acc = run.scalars("holdout_acc")
    print(f"\nrecorded {len(run.snapshot_steps)} steps of {len(run.norm_layers)} norm layers in {args.run_dir}; "
          f"held-out accuracy {holdout_acc[-1]:.1%}")
    runs_root = Path(args.run_dir).parent
    print("look at it:")
    print(f"  bnviz app --runs {runs_root}        # then the 'Your runs' page")
    print(f"  bnviz doctor {args.run_dir}")


if __name__ == "__main__":
    main()
