"""Feed routes (API.md "Feed")."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from fanout.accounts.model import UserId
from fanout.api import wire
from fanout.api.accounts import UserOut, user_out
from fanout.api.routing import Context, Operation
from fanout.api.wire import Limit, PageQuery
from fanout.feed.model import Comment, PostId
from fanout.feed.service import FollowPage
from fanout.feed.wire import PostOut, post_out

__all__ = ["OPERATIONS"]

Url = Annotated[str, msgspec.Meta(max_length=2048)]


class FeedQuery(msgspec.Struct, forbid_unknown_fields=True):
    cursor: str | None = None
    limit: Limit = 20
    mode: Literal["chronological", "ranked"] = "chronological"


class CreatePost(msgspec.Struct, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=5000)]
    media_urls: Annotated[list[Url], msgspec.Meta(max_length=10)] = []


class CreateComment(msgspec.Struct, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class CommentOut(msgspec.Struct):
    id: str
    post_id: str
    author_id: str
    text: str
    created_at: str


class PostList(msgspec.Struct):
    items: list[PostOut]
    next_cursor: str | None


class CommentList(msgspec.Struct):
    items: list[CommentOut]
    next_cursor: str | None


class UserList(msgspec.Struct):
    items: list[UserOut]
    next_cursor: str | None


def comment_out(comment: Comment) -> CommentOut:
    return CommentOut(str(comment.id), str(comment.post_id), str(comment.author_id),
                      comment.text, wire.iso(comment.created_ms))  # fmt: skip


def _post_id(ctx: Context) -> PostId:
    return PostId(ctx.path_id("id", "post"))


async def create_post(ctx: Context, body: CreatePost) -> PostOut:
    post = await ctx.platform.feed.create_post(ctx.user_id, body.text, body.media_urls)
    return post_out(post, False)


async def get_post(ctx: Context) -> PostOut:
    post = await ctx.platform.feed.get_post(_post_id(ctx))
    return post_out(post, post.id in await ctx.platform.feed.liked(ctx.user_id, [post]))


async def delete_post(ctx: Context) -> None:
    await ctx.platform.feed.delete_post(ctx.user_id, _post_id(ctx))


async def follow(ctx: Context) -> None:
    followee = UserId(ctx.path_id("user_id", "user"))
    if followee != ctx.user_id:
        await ctx.platform.accounts.get(followee)  # 404 for an unknown user
    await ctx.platform.feed.follow(ctx.user_id, followee)


async def unfollow(ctx: Context) -> None:
    await ctx.platform.feed.unfollow(ctx.user_id, UserId(ctx.path_id("user_id", "user")))


async def _users(ctx: Context, page: FollowPage) -> UserList:
    users = await ctx.platform.accounts.get_many([e.user_id for e in page.edges])
    items = [user_out(users[e.user_id]) for e in page.edges if e.user_id in users]
    return UserList(items, page.next_cursor)


async def followers(ctx: Context) -> UserList:
    query = ctx.query(PageQuery)
    user = UserId(ctx.path_id("id", "user"))
    return await _users(ctx, await ctx.platform.feed.followers(user, query.cursor, query.limit))


async def following(ctx: Context) -> UserList:
    query = ctx.query(PageQuery)
    user = UserId(ctx.path_id("id", "user"))
    return await _users(ctx, await ctx.platform.feed.following(user, query.cursor, query.limit))


async def user_posts(ctx: Context) -> PostList:
    query = ctx.query(PageQuery)
    author = UserId(ctx.path_id("id", "user"))
    posts, cursor = await ctx.platform.feed.user_posts(author, query.cursor, query.limit)
    liked = await ctx.platform.feed.liked(ctx.user_id, posts)
    return PostList([post_out(p, p.id in liked) for p in posts], cursor)


async def read_feed(ctx: Context) -> PostList:
    query = ctx.query(FeedQuery)
    page = await ctx.platform.feed_reader.read(ctx.user_id, query.cursor, query.limit, query.mode)
    return PostList([post_out(p, p.id in page.liked) for p in page.posts], page.next_cursor)


async def like(ctx: Context) -> None:
    await ctx.platform.feed.like(ctx.user_id, _post_id(ctx))


async def unlike(ctx: Context) -> None:
    await ctx.platform.feed.unlike(ctx.user_id, _post_id(ctx))


async def create_comment(ctx: Context, body: CreateComment) -> CommentOut:
    return comment_out(await ctx.platform.feed.comment(ctx.user_id, _post_id(ctx), body.text))


async def list_comments(ctx: Context) -> CommentList:
    query = ctx.query(PageQuery)
    found, cursor = await ctx.platform.feed.comments(_post_id(ctx), query.cursor, query.limit)
    return CommentList([comment_out(c) for c in found], cursor)


OPERATIONS = [
    Operation("POST", "/v1/posts", create_post, "Publish a post", body=CreatePost,
              response=PostOut, status=201, tag="feed"),
    Operation("GET", "/v1/posts/{id}", get_post, "A post", response=PostOut, tag="feed"),
    Operation("DELETE", "/v1/posts/{id}", delete_post, "Delete your post", tag="feed"),
    Operation("PUT", "/v1/follows/{user_id}", follow, "Follow a user (idempotent)", tag="feed"),
    Operation("DELETE", "/v1/follows/{user_id}", unfollow, "Unfollow (idempotent)", tag="feed"),
    Operation("GET", "/v1/users/{id}/followers", followers, "Who follows a user",
              query=PageQuery, response=UserList, tag="feed"),
    Operation("GET", "/v1/users/{id}/following", following, "Whom a user follows",
              query=PageQuery, response=UserList, tag="feed"),
    Operation("GET", "/v1/users/{id}/posts", user_posts, "A user's posts, newest first",
              query=PageQuery, response=PostList, tag="feed"),
    Operation("GET", "/v1/feed", read_feed, "Your feed", query=FeedQuery, response=PostList,
              tag="feed"),
    Operation("PUT", "/v1/posts/{id}/like", like, "Like a post (idempotent)", tag="feed"),
    Operation("DELETE", "/v1/posts/{id}/like", unlike, "Unlike a post (idempotent)", tag="feed"),
    Operation("POST", "/v1/posts/{id}/comments", create_comment, "Comment on a post",
              body=CreateComment, response=CommentOut, status=201, tag="feed"),
    Operation("GET", "/v1/posts/{id}/comments", list_comments, "Comments, oldest first",
              query=PageQuery, response=CommentList, tag="feed"),
]  # fmt: skip
