/* list.h - an intrusive doubly linked list.
 *
 * The things the daemon keeps in flight (a driver's sends, a pool's
 * requests and connections, the dispatcher's jobs, the chat's sockets) each
 * embed a struct sb_list_node and sit on a struct sb_list; removal is O(1)
 * from the node alone, and no list allocates. container_of() gets from a
 * node back to its struct (the Linux kernel's list.h is the model; this is
 * a much smaller one).
 *
 *     struct op { ...; struct sb_list_node link; };
 *     struct sb_list ops = SB_LIST_INIT;
 *     sb_list_push_back(&ops, &op->link);
 *     for (struct sb_list_node *n = ops.head; n; n = n->next)
 *         use(sb_container_of(n, struct op, link));
 *     sb_list_remove(&ops, &op->link);
 *
 * A node is on at most one list at a time through one sb_list_node; a
 * struct on two lists embeds two nodes. To remove while walking, read
 * n->next first. Removing a node not on the list is a programming error.
 */
#ifndef SB_LIST_H
#define SB_LIST_H

#include <stddef.h>

struct sb_list_node {
    struct sb_list_node *prev, *next;
};

struct sb_list {
    struct sb_list_node *head, *tail;
    size_t count;
};

#define SB_LIST_INIT {NULL, NULL, 0}

#define sb_container_of(ptr, type, member)                                   \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void sb_list_push_back(struct sb_list *l,
                                     struct sb_list_node *n)
{
    n->next = NULL;
    n->prev = l->tail;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
    l->count++;
}

static inline void sb_list_push_front(struct sb_list *l,
                                      struct sb_list_node *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head)
        l->head->prev = n;
    else
        l->tail = n;
    l->head = n;
    l->count++;
}

static inline void sb_list_remove(struct sb_list *l, struct sb_list_node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
    l->count--;
}

/* The first node, taken off the list; NULL when empty. */
static inline struct sb_list_node *sb_list_pop_front(struct sb_list *l)
{
    struct sb_list_node *n = l->head;

    if (n)
        sb_list_remove(l, n);
    return n;
}

#endif
